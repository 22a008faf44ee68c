"""``sidecar rotate plan`` and ``sidecar rotate status``: the scheduled key cut-over (SPEC §8).

``plan`` makes the next key as ``keygen`` does, the instant file, and a patch
for the Kubernetes Secret, then prints the command that applies it and the
certificate code to paste into Synerise at T. ``status`` asks a running
sidecar which key signs, which is next, and how long until it does.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from sidecar.domain import keys
from sidecar.domain.errors import ConfigError

#: Tokens issued before a sidecar knows T can live this long past it (the default SIDECAR_DEFAULT_TTL).
LIFETIME_AHEAD = 24 * 3600

#: Names of the two entries the Secret gains (the manifests mount them beside private.pem).
NEXT_KEY_ENTRY = "next.pem"
INSTANT_ENTRY = "next-activates-at"
PATCH_FILE = "secret-patch.json"
DEFAULT_SECRET = "sidecar-signing"


def countdown(seconds: float) -> str:
    """``2d 3h 4m 5s`` (``-`` in front once the instant has passed).

    >>> countdown(93784.2), countdown(-61)
    ('1d 2h 3m 4s', '-1m 1s')
    """
    sign = "-" if seconds < 0 else ""
    left = int(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size or parts:
            parts.append(f"{left // size}{unit}")
            left %= size
    parts.append(f"{left}s")
    return sign + " ".join(parts)


def plan(at: str, out: str, secret: str, now: float | None = None, stdout: TextIO = sys.stdout) -> int:
    """Write the next key and the Secret patch into ``out``; print what to run and what to paste."""
    instant = keys.parse_instant(at, "--at")
    now = time.time() if now is None else now
    if instant <= now:
        raise ConfigError(f"--at: must be in the future (it is {countdown(instant - now)} from now)")
    key = keys.generate()
    at_text = keys.format_instant(instant).encode() + b"\n"
    entries = {NEXT_KEY_ENTRY: keys.private_pem(key), INSTANT_ENTRY: at_text}
    patch = {"data": {name: base64.b64encode(data).decode("ascii") for name, data in entries.items()}}
    # All or nothing: a file left from an earlier plan refuses the run before the new key is written.
    written = keys.write_keypair(key, out, extra={INSTANT_ENTRY: (at_text, 0o644),
                                                  PATCH_FILE: (json.dumps(patch, indent=2).encode() + b"\n", 0o600)})
    patch_path = Path(out) / PATCH_FILE
    print(f"next key {key.key_id} ({key.bits} bits) signs from {keys.format_instant(instant)} "
          f"(in {countdown(instant - now)})", file=stdout)
    for path in written:
        print(f"  wrote {path}", file=stdout)
    if instant - now < LIFETIME_AHEAD:
        print(f"warning: T is only {countdown(instant - now)} away: tokens issued before the sidecars see the next "
              "key keep their full lifetime (SIDECAR_DEFAULT_TTL, 24h by default) and may outlive T", file=sys.stderr)
    print("\n1. Deploy it now, at least one token lifetime (SIDECAR_DEFAULT_TTL) before T: add next.pem and "
          "next-activates-at to the Secret (the private key stays in the patch file, off the command line; "
          "delete the file afterwards):\n", file=stdout)
    print(f"  kubectl patch secret {secret} --patch-file {patch_path}\n", file=stdout)
    print("   Each sidecar picks both up within a minute; until the instant no token outlives it. Check with "
          "`sidecar rotate status`.\n", file=stdout)
    print(f"2. At {keys.format_instant(instant)} paste this certificate code into Synerise "
          "(Certificate -> Define -> overwrite):\n", file=stdout)
    print(key.certificate_code, file=stdout)
    print("\n3. Any time after T, promote the next key to the key file in one Secret update (the sidecars "
          "change nothing: that key already signs):\n", file=stdout)
    print(f"  {promote_command(secret)}", file=stdout)
    return 0


def promote_command(secret: str) -> str:
    """The ``kubectl`` command that makes next.pem the Secret's private.pem and drops the instant, at once."""
    ops = [{"op": "move", "from": f"/data/{NEXT_KEY_ENTRY}", "path": "/data/private.pem"},
           {"op": "remove", "path": f"/data/{INSTANT_ENTRY}"}]
    return f"kubectl patch secret {secret} --type json -p '{json.dumps(ops, separators=(',', ':'))}'"


def status(addr: str, now: float | None = None, stdout: TextIO = sys.stdout) -> int:
    """Print the active and next key of the sidecar at ``addr``; exit 0."""
    from sidecar.transport import client

    with client.connect(addr) as stub:
        r = client.get_public_key(stub)
    now = time.time() if now is None else now
    print(f"active  {r.key_id}  ({r.bits} bits)", file=stdout)
    if r.HasField("next_key"):
        t = r.next_key.activates_at.seconds
        print(f"next    {r.next_key.key_id}  activates at {keys.format_instant(t)}  (in {countdown(t - now)})",
              file=stdout)
    else:
        print("next    none scheduled", file=stdout)
    return 0
