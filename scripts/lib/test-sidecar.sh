# Sourced by the runners in scripts/test.d/: a scratch directory, an openssl-made RSA key
# (as Synerise's guide makes it) and a real `sidecar serve` on 127.0.0.1 and a Unix socket,
# all torn down on exit. Needs ROOT and VENV. Sets tmp, tcp, unix, salt and pid.
tmp="$(mktemp -d "/tmp/sc-${1:-test}-XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

openssl genpkey -out "$tmp/private.pem" -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null
openssl rsa -pubout < "$tmp/private.pem" > "$tmp/public.pem" 2>/dev/null
chmod 600 "$tmp/private.pem"

tcp="127.0.0.1:$(free_port)"
unix="unix://$tmp/sidecar.sock"
salt=someString
env -u SIDECAR_WORKERS SIDECAR_LISTEN="$tcp,$unix" SIDECAR_METRICS_ADDR="" SIDECAR_KEY_FILE="$tmp/private.pem" \
  SIDECAR_UUID_SALT="$salt" SIDECAR_LOG_LEVEL=WARNING ${SIDECAR_AUDIT_LEVEL:+SIDECAR_AUDIT_LEVEL="$SIDECAR_AUDIT_LEVEL"} \
  "$VENV/bin/sidecar" serve &
pid=$!
for _ in $(seq 1 150); do
  "$VENV/bin/sidecar" health --addr "$tcp" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "sidecar exited during start-up" >&2; exit 1; }
  sleep 0.2
done
"$VENV/bin/sidecar" health --addr "$tcp" >/dev/null
