"""The ``sidecar`` command: serve, keygen, public-key, health, demo.

Start-up problems end the process with one line on stderr, no traceback, and
exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from sidecar import __version__, keys
from sidecar import config as config_mod
from sidecar.errors import ConfigError

log = logging.getLogger("sidecar")

DEV_BANNER = (
    "DEVELOPMENT MODE: no key configured, signing with a THROW-AWAY key generated at start-up "
    "and the dev UUID salt. Tokens will not verify in Synerise. Set SIDECAR_KEY_FILE and "
    "SIDECAR_UUID_SALT (or pass --production) for real use."
)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gRPC server",
                       description="Run the sidecar. Every flag overrides its SIDECAR_* variable.")
    p.add_argument("--key-file", help="private key: PKCS#8 PEM, PKCS#1 PEM or PKCS#8 DER [SIDECAR_KEY_FILE]")
    p.add_argument("--key-passphrase-file", help="file holding the key's passphrase [SIDECAR_KEY_PASSPHRASE_FILE]")
    p.add_argument("--uuid-salt", help="salt put before the identifier for UUIDv5 [SIDECAR_UUID_SALT]")
    p.add_argument("--uuid-namespace", help="UUIDv5 namespace: url, dns or a UUID [SIDECAR_UUID_NAMESPACE]")
    p.add_argument("--default-ttl", help="token lifetime: seconds, 30m, 24h, 6d; < 7 days [SIDECAR_DEFAULT_TTL]")
    p.add_argument("--listen", help="comma-separated unix:///path and host:port addresses [SIDECAR_LISTEN]")
    p.add_argument("--metrics-addr", help="host:port for /metrics; empty disables [SIDECAR_METRICS_ADDR]")
    p.add_argument("--events-config", help="TOML file with the event lists [SIDECAR_EVENTS_CONFIG]")
    p.add_argument("--grace", help="drain time on SIGTERM, e.g. 10s [SIDECAR_GRACE]")
    p.add_argument("--workers", help="gRPC worker processes, or 'auto' for one per core [SIDECAR_WORKERS]")
    p.add_argument("--token-cache-size", help="tokens kept for reuse (in all workers); 0 turns the cache off "
                   "[SIDECAR_TOKEN_CACHE_SIZE]")
    p.add_argument("--token-cache-min-remaining", help="share of the asked lifetime a reused token must still "
                   "have, e.g. 0.5 [SIDECAR_TOKEN_CACHE_MIN_REMAINING]")
    p.add_argument("--production", action="store_true", default=None,
                   help="refuse development mode: a key and a salt must be configured")
    p.add_argument("--log-level", default=os.environ.get("SIDECAR_LOG_LEVEL", "INFO"),
                   help="DEBUG, INFO, WARNING, ERROR [SIDECAR_LOG_LEVEL]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar", description="Identity and token sidecar for Synerise JS SDK authentication.")
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)

    k = sub.add_parser("keygen", help="write private.pem, private.der and public.pem as Synerise's openssl commands do")
    k.add_argument("--out", required=True, help="directory to write the three files into")
    k.add_argument("--bits", type=int, default=2048, help="RSA modulus size (at least 2048)")

    pk = sub.add_parser("public-key", help="print the one-line Synerise certificate code")
    pk.add_argument("--key-file", default=os.environ.get("SIDECAR_KEY_FILE"),
                    help="read this private or public key file [SIDECAR_KEY_FILE]; else ask the server at --addr")
    pk.add_argument("--key-passphrase-file", default=os.environ.get("SIDECAR_KEY_PASSPHRASE_FILE"))
    pk.add_argument("--addr", help="server address (default: the first of SIDECAR_LISTEN)")
    pk.add_argument("--bare", action="store_true", help="without the BEGIN/END PUBLIC KEY header and footer")
    pk.add_argument("--format", choices=("code", "pem", "jwk"), default="code")

    h = sub.add_parser("health", help="exit 0 when the server answers SERVING (for container health checks)")
    h.add_argument("--addr", help="server address (default: the first of SIDECAR_LISTEN)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")

    d = sub.add_parser("demo", help="start a development-mode server, resolve identities through it, print the results")
    d.add_argument("--email", default="customer@synerise.com")
    return parser


def _default_addr() -> str:
    listen = os.environ.get("SIDECAR_LISTEN", "127.0.0.1:50051")
    return listen.split(",")[0].strip()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    flags = {k: getattr(args, k, None) for k in
             ("key_file", "key_passphrase_file", "uuid_salt", "uuid_namespace", "default_ttl", "listen",
              "metrics_addr", "events_config", "grace", "workers", "production")}
    flags.update(token_cache_size=args.token_cache_size, token_cache_min_remaining=args.token_cache_min_remaining)
    cfg = config_mod.from_sources(flags)
    _setup_logging(args.log_level)
    if cfg.dev_mode:
        key = keys.generate()
        for line in ("!" * 78, DEV_BANNER, "!" * 78):
            log.warning(line)
    else:
        assert cfg.key_file is not None
        key = keys.load(cfg.key_file, cfg.key_passphrase_file)
    log.info("signing key %s (%d bits) from %s", key.key_id, key.bits, key.source)
    from sidecar import app

    return app.serve(cfg, key)


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.bits < keys.MIN_BITS:
        raise ConfigError(f"--bits: must be at least {keys.MIN_BITS}")
    key = keys.generate(args.bits)
    for path in keys.write_keypair(key, args.out):
        print(path)
    print(f"key_id {key.key_id}", file=sys.stderr)
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    if args.key_file:
        pem, code, bare, jwk = _public_from_file(args.key_file, args.key_passphrase_file)
    else:
        from sidecar import client

        with client.connect(args.addr or _default_addr()) as stub:
            r = client.get_public_key(stub)
            pem, code, bare, jwk = r.pem, r.certificate_code, r.certificate_code_bare, r.jwk
    if args.format == "pem":
        sys.stdout.write(pem)
    elif args.format == "jwk":
        print(jwk)
    else:
        print(bare if args.bare else code)
    return 0


def _public_from_file(path: str, passphrase_file: str | None) -> tuple[str, str, str, str]:
    import json
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: cannot read it ({exc.strerror})") from None
    if b"PUBLIC KEY-----" in data:
        try:
            pub = serialization.load_pem_public_key(data)
        except ValueError:
            raise ConfigError(f"key file {path}: not a PEM public key") from None
        if not isinstance(pub, rsa.RSAPublicKey):
            raise ConfigError(f"key file {path}: not an RSA key")
        # Describe the public key through the same code path as a private one.
        info = keys.describe_public(pub, path)
    else:
        info = keys.load(path, passphrase_file)
    return info.public_pem, info.certificate_code, info.certificate_code_bare, json.dumps(info.public_jwk())


def cmd_health(args: argparse.Namespace) -> int:
    from sidecar import client

    addr = args.addr or _default_addr()
    status = client.health_status(addr, timeout=args.timeout)
    print(f"{addr}: {status}")
    return 0 if status == "SERVING" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from sidecar import demo

    return demo.run(args.email)


COMMANDS = {"serve": cmd_serve, "keygen": cmd_keygen, "public-key": cmd_public_key,
            "health": cmd_health, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"sidecar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
