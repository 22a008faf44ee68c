#!/bin/sh
# Container entrypoint: make the Unix socket group-writable, then become the
# sidecar (exec, so it is PID 1 and gets SIGTERM from `podman stop` / the kubelet).
# With umask 0007 the socket is srwxrwx---: an app container that shares the
# pod's fsGroup can connect, everyone else cannot.
umask "${SIDECAR_UMASK:-0007}"
exec sidecar "$@"
