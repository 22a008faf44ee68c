"""Example backend: a login endpoint that asks the sidecar which identity the browser must carry.

After its own (stand-in) authentication of the user, ``POST /api/login`` calls
``ResolveIdentity`` with the customer's email, the browser's
``SR.client.getIdentityHash()`` and the browser's cookies (the sidecar reads
``_snrs_uuid`` and ``_snrs_p`` from the ``Cookie`` header), and returns what the
frontend module ``static/synerise-auth.js`` needs. With ``"delivery": "cookie"``
the token is set as the ``_snrs_token`` cookie (not HttpOnly: the JS SDK reads
it) instead of being returned.

Run: ``SIDECAR_ADDR=unix:///run/sidecar/sidecar.sock python examples/web/app.py``
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_from_directory
from sidecar_client import InvalidArgument, SidecarClient, SidecarClientError, Unavailable

HERE = Path(__file__).resolve().parent

#: Stand-in for your user store: email -> password. Replace with your real login.
DEMO_USERS = {
    "customer@synerise.com": "demo-password",
    "josé@example.com": "demo-password",
}


def check_password(email: str, password: str, users: dict[str, str]) -> bool:
    """The example's own authentication; constant-time so it does not leak which emails exist."""
    expected = users.get(email, "")
    return bool(expected) & hmac.compare_digest(expected.encode(), password.encode())


def create_app(sidecar: SidecarClient, users: dict[str, str] | None = None) -> Flask:
    """The Flask app; ``sidecar`` is shared by all requests (the client is thread-safe)."""
    app = Flask(__name__, static_folder=str(HERE / "static"), static_url_path="/static")
    known = DEMO_USERS if users is None else users

    @app.get("/")
    def index() -> Response:
        return send_from_directory(HERE / "static", "index.html")

    @app.post("/api/login")
    def login() -> tuple[Response, int]:
        body: dict[str, Any] = request.get_json(silent=True) or {}
        email, password = str(body.get("email", "")), str(body.get("password", ""))
        if not check_password(email, password, known):
            return jsonify(error="wrong email or password"), 401
        try:
            who = sidecar.resolve_identity(email, identity_hash=str(body.get("identityHash", "")),
                                           cookie_header=request.headers.get("Cookie", ""))
        except InvalidArgument as exc:  # e.g. a tampered _snrs_uuid cookie
            return jsonify(error="invalid request", field=exc.field, rule=exc.rule), 400
        except Unavailable:
            return jsonify(error="identity service unavailable, try again"), 503
        except SidecarClientError:
            return jsonify(error="identity service error"), 502
        answer = {
            "uuid": who.uuid,
            "identityHash": who.identity_hash,
            "setIdentity": who.set_identity,
            "outcome": who.outcome.value,
            "expiresAt": who.token.expires_at.isoformat(),
        }
        if body.get("delivery") == "cookie":
            answer["delivery"] = "cookie"
            response = jsonify(answer)
            # Not HttpOnly: the JS SDK reads the cookie, stores the token as snr-token and deletes the cookie.
            response.set_cookie("_snrs_token", who.token.jwt, expires=who.token.expires_at, path="/",
                                httponly=False, secure=request.is_secure, samesite="Lax")
            return response, 200
        answer["delivery"] = "sdk"
        answer["jwt"] = who.token.jwt
        return jsonify(answer), 200

    return app


def main() -> None:
    """Serve on 127.0.0.1:$PORT (default 8000), talking to the sidecar at $SIDECAR_ADDR."""
    sidecar = SidecarClient(os.environ.get("SIDECAR_ADDR", "127.0.0.1:50051"))
    app = create_app(sidecar)
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True)


if __name__ == "__main__":
    main()
