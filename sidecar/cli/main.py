"""The ``sidecar`` command: serve, keygen, public-key, health, demo.

Start-up problems end the process with one line on stderr, no traceback, and
exit code 2.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.cli import config as config_mod
from sidecar.cli import settings
from sidecar.domain import keys
from sidecar.domain.errors import ConfigError
from sidecar.ops import keyfile, sched

log = logging.getLogger("sidecar")


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gRPC server",
                       description="Run the sidecar. Every flag overrides its SIDECAR_* variable.")
    settings.add_arguments(p, config_mod.SETTINGS)


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

    _rotate_parsers(sub)

    d = sub.add_parser("demo", help="start a development-mode server, resolve identities through it, print the results")
    d.add_argument("--email", default="customer@synerise.com")
    _events_parsers(sub)
    return parser


def _rotate_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sidecar.cli import rotate

    r = sub.add_parser("rotate", help="scheduled key cut-over: plan the next key, show the schedule")
    r_sub = r.add_subparsers(dest="rotate_command", required=True, metavar="SUBCOMMAND")
    plan = r_sub.add_parser("plan", help="make the next key, print the kubectl command and the certificate code")
    plan.add_argument("--at", required=True, metavar="INSTANT",
                      help="when the next key starts signing: RFC 3339 with offset, e.g. 2026-12-03T10:00:00Z")
    plan.add_argument("--out", default="next-key", help="directory to write the key and the Secret patch into")
    plan.add_argument("--secret", default=rotate.DEFAULT_SECRET, help="name of the Kubernetes Secret")
    st = r_sub.add_parser("status", help="active and next key ids, the instant and the countdown")
    st.add_argument("--addr", help="server address (default: the first of SIDECAR_LISTEN)")


def cmd_rotate(args: argparse.Namespace) -> int:
    from sidecar.cli import rotate

    if args.rotate_command == "plan":
        return rotate.plan(args.at, args.out, args.secret)
    return rotate.status(args.addr or _default_addr())


def _events_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("events", help="event authentication settings (SIDECAR_EVENTS_CONFIG)")
    ev_sub = ev.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    check = ev_sub.add_parser("check", help="validate a settings file; print the lists and the decision table")
    check.add_argument("file", metavar="FILE", help="TOML file with the three event lists")
    check.add_argument("--action", action="append", default=[],
                       help="also show this event action in the decision table (repeatable)")

    v = sub.add_parser("verify", help="check a token the way Synerise does; exit 0 when valid, 1 when not")
    v.add_argument("token", metavar="TOKEN", help="the compact JWT, or - to read it from stdin")
    v.add_argument("--key-file", help="check against this private or public key file instead of asking the server")
    v.add_argument("--key-passphrase-file", default=os.environ.get("SIDECAR_KEY_PASSPHRASE_FILE"))
    v.add_argument("--addr", help="server address (default: the first of SIDECAR_LISTEN)")


def _default_addr() -> str:
    listen = os.environ.get("SIDECAR_LISTEN", "127.0.0.1:50051")
    return listen.split(",")[0].strip()


def _setup_logging(level: str, fmt: str) -> None:
    """The process's log lines in the audit log's format (``SIDECAR_AUDIT_FORMAT``): one parser for stderr."""
    from sidecar.telemetry import audit

    audit.ensure_std_fds()  # before anything opens a file that could take a closed fd 2's number
    audit.configure_logging(level, fmt)


def cmd_serve(args: argparse.Namespace) -> int:
    flags = {s.name: getattr(args, s.name, None) for s in config_mod.SETTINGS}
    cfg = config_mod.from_sources(flags)
    _setup_logging(cfg.log_level, cfg.audit_format)
    # A fatal signal (an abort inside grpc core, say) leaves every thread's Python stack on stderr:
    # names and lines only, no values, so nothing of the key.
    try:
        faulthandler.enable(all_threads=True)
    except (RuntimeError, ValueError, OSError):  # no usable stderr file (embedded in another program)
        pass
    # Before any thread starts: threads and worker processes inherit the policy.
    problem = sched.apply(cfg.sched_policy)
    if problem:
        logging.getLogger("sidecar").warning("SIDECAR_SCHED_POLICY=%s not applied: %s", cfg.sched_policy, problem)
    keyfile.disable_core_dumps()
    if cfg.dev_mode:
        key = keys.generate()
    else:
        assert cfg.key_file is not None
        key = keyfile.load_key(cfg.key_file, cfg.key_passphrase_file,
                               allow_insecure=cfg.allow_insecure_key_permissions)
    from sidecar.cli import serve

    return serve.serve(cfg, key)


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
        from sidecar.transport import client

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
    from sidecar.transport import client

    addr = args.addr or _default_addr()
    status = client.health_status(addr, timeout=args.timeout)
    print(f"{addr}: {status}")
    return 0 if status == "SERVING" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from sidecar.cli import demo

    return demo.run(args.email)


COMMANDS = {"serve": cmd_serve, "keygen": cmd_keygen, "public-key": cmd_public_key,
            "health": cmd_health, "demo": cmd_demo}


def cmd_events(args: argparse.Namespace) -> int:
    """``sidecar events check FILE``: the effective lists, warnings and decision table."""
    from sidecar.domain import event_policy
    from sidecar.domain.errors import InvalidArgument

    settings, warnings = event_policy.load(args.file)
    for action in args.action:
        try:
            event_policy.check_action(action, "--action")
        except InvalidArgument as exc:
            raise ConfigError(f"{exc.field}: {action!r} {exc.rule}") from None
    print(f"{args.file}: valid")
    empty_means = {event_policy.ANONYMOUS: "every event is accepted for anonymous customers",
                   event_policy.DATA_WITHOUT_JWT: "every event may change data without a JWT, if data_with_jwt is empty too",
                   event_policy.DATA_WITH_JWT: "no event requires a JWT"}
    for name, values in settings.as_dict().items():
        note = f"  # empty: {empty_means[name]}" if not values else ""
        print(f"{name} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in values)}]{note}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rows = event_policy.table(settings, args.action)
    width = max(len("action"), *(len(r[0]) for r in rows))
    print()
    print(f"{'action':<{width}}  changes data  {'without a JWT':<34}  with a valid JWT")
    for action, changes, without, with_ in rows:
        w = f"{without.label} ({without.rule})"
        print(f"{action:<{width}}  {'yes' if changes else 'no':<12}  {w:<34}  {with_.label}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``sidecar verify TOKEN``: print the verdict; exit 0 valid, 1 invalid."""
    import datetime

    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()
    if args.key_file:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from sidecar.domain import verify

        pem, *_ = _public_from_file(args.key_file, args.key_passphrase_file)
        public = serialization.load_pem_public_key(pem.encode("ascii"))
        assert isinstance(public, rsa.RSAPublicKey)
        info = keys.describe_public(public, args.key_file)
        v = verify.Verifier(lambda: info).verify(token) if token else verify.Verdict.invalid("malformed")
        valid, reason, email, uuid_, exp, key_id = v.valid, v.reason, v.email, v.uuid, v.expires_at, v.key_id
    else:
        from sidecar.transport import client

        r = client.verify_token(args.addr or _default_addr(), token)
        valid, reason, email, uuid_, exp, key_id = r.valid, r.reason, r.email, r.uuid, r.expires_at.seconds, r.key_id
    if not valid:
        print(f"invalid: {reason}")
        return 1
    expires = datetime.datetime.fromtimestamp(exp, datetime.UTC).isoformat()
    print(f"valid\nuuid: {uuid_}\nemail: {email}\nexpires_at: {expires}\nkey_id: {key_id}")
    return 0


COMMANDS.update({"events": cmd_events, "verify": cmd_verify, "rotate": cmd_rotate})


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
