"""Message classes generated from ``proto/sidecar/v1/identity.proto`` by ``gen_stubs.py``; do not edit."""
