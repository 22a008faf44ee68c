"""``sidecar demo``: start a development-mode server, walk the identity flow, print it.

Shows the three branches of Synerise's flow as a backend sees them, over a
real Unix socket, then stops the server with SIGTERM and checks it drained.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sidecar.domain.identity import identity_hash
from sidecar.transport import client
from sidecar.v1 import identity_pb2 as pb


def _payload(jwt: str) -> dict[str, object]:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def run(email: str) -> int:
    with tempfile.TemporaryDirectory(prefix="sidecar-demo-") as tmp:
        sock = f"unix://{Path(tmp) / 'sidecar.sock'}"
        env = {**os.environ, "SIDECAR_LISTEN": sock, "SIDECAR_METRICS_ADDR": ""}
        env.setdefault("SIDECAR_AUDIT_FORMAT", "text")  # the audit lines, readable between the demo's output
        env.pop("SIDECAR_KEY_FILE", None)
        proc = subprocess.Popen([sys.executable, "-m", "sidecar", "serve"], env=env)
        try:
            deadline = time.monotonic() + 20
            while client.health_status(sock, timeout=0.5) != "SERVING":
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("demo: the sidecar did not come up", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(f"\nsidecar serving on {sock} (development mode)\n")
            cookie_uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
            cases = [
                ("browser has no identity hash yet", pb.ResolveIdentityRequest(email=email, cookie_uuid=cookie_uuid)),
                ("browser already carries hash(email)",
                 pb.ResolveIdentityRequest(email=email, identity_hash=identity_hash(email), cookie_uuid=cookie_uuid)),
                ("browser carries someone else's hash",
                 pb.ResolveIdentityRequest(email=email, identity_hash=identity_hash("someone@else.example"),
                                           cookie_header=f"_snrs_uuid={cookie_uuid}; other=1")),
            ]
            with client.connect(sock) as stub:
                for title, req in cases:
                    r = stub.ResolveIdentity(req, timeout=5)
                    print(f"== {title}")
                    print(f"   outcome       {pb.Outcome.Name(r.outcome)}")
                    print(f"   uuid          {r.uuid}")
                    print(f"   identity_hash {r.identity_hash}")
                    print(f"   set_identity  {r.set_identity}")
                    print(f"   token payload {json.dumps(_payload(r.token.jwt))}")
                    print(f"   key_id        {r.token.key_id}\n")
                refused = client.refusal(lambda: stub.IssueToken(
                    pb.IssueTokenRequest(email="not-an-email", uuid=cookie_uuid), timeout=5))
                if refused is not None:
                    print(f"== a bad request is refused\n   {refused[0]}: {refused[1]}\n")
                key = stub.GetPublicKey(pb.GetPublicKeyRequest(), timeout=5)
                print(f"== certificate code for Synerise (throw-away dev key)\n   {key.certificate_code[:72]}...\n")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        print(f"sidecar drained and exited with {code}")
        return 0 if code == 0 else 1
