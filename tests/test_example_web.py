"""examples/web/app.py's backend with Flask's test client, against a real sidecar on a Unix socket."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from sidecar_client import NO_RETRY, SidecarClient

from tests.conftest import ROOT, Running, free_port

EMAIL = "customer@synerise.com"
COOKIE_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_web_app", ROOT / "examples/web/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_login_returns_what_the_frontend_needs(example: ModuleType, start_server: Callable[..., Running],
                                               openssl_keys: Path) -> None:
    server = start_server()
    with SidecarClient(server.unix) as sidecar:
        web = example.create_app(sidecar).test_client()
        web.set_cookie("_snrs_uuid", COOKIE_UUID)
        r = web.post("/api/login", json={"email": EMAIL, "password": "demo-password", "identityHash": ""})
    assert r.status_code == 200
    body = r.get_json()
    assert {k: body[k] for k in ("uuid", "identityHash", "setIdentity", "outcome", "delivery")} == {
        "uuid": COOKIE_UUID, "identityHash": "-374943845", "setIdentity": True, "outcome": "new_identity",
        "delivery": "sdk"}
    claims = jose_jwt.decode(body["jwt"], RSAKey.import_key((openssl_keys / "public.pem").read_bytes())).claims
    assert claims["uuid"] == COOKIE_UUID and claims["email"] == EMAIL


def test_cookie_delivery_sets_a_readable_snrs_token(example: ModuleType, start_server: Callable[..., Running]) -> None:
    server = start_server()
    with SidecarClient(server.unix) as sidecar:
        web = example.create_app(sidecar).test_client()
        web.set_cookie("_snrs_uuid", COOKIE_UUID)
        r = web.post("/api/login", json={"email": EMAIL, "password": "demo-password", "delivery": "cookie"})
    assert r.status_code == 200 and "jwt" not in r.get_json() and r.get_json()["uuid"] == COOKIE_UUID
    [set_cookie] = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("_snrs_token=")]
    attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert "httponly" not in attributes and {"expires", "path", "samesite"} <= attributes


@pytest.mark.parametrize("body, cookie, status, field", [
    ({"email": EMAIL, "password": "nope"}, COOKIE_UUID, 401, None),
    ({"email": "someone@else.example", "password": "demo-password"}, COOKIE_UUID, 401, None),
    ({"email": EMAIL, "password": "demo-password"}, "forged", 400, "cookie_header._snrs_uuid"),
    ({"email": EMAIL, "password": "demo-password", "identityHash": "x1"}, COOKIE_UUID, 400, "identity_hash"),
])
def test_refusals(example: ModuleType, start_server: Callable[..., Running], body: dict[str, str], cookie: str,
                  status: int, field: str | None) -> None:
    server = start_server()
    with SidecarClient(server.tcp) as sidecar:
        web = example.create_app(sidecar).test_client()
        web.set_cookie("_snrs_uuid", cookie)
        r = web.post("/api/login", json=body)
    assert r.status_code == status
    assert r.get_json().get("field") == field
    assert "jwt" not in r.get_json() and "_snrs_token" not in r.headers.get("Set-Cookie", "")


def test_sidecar_down_is_503(example: ModuleType) -> None:
    with SidecarClient(f"127.0.0.1:{free_port()}", retry=NO_RETRY) as sidecar:
        r = example.create_app(sidecar).test_client().post(
            "/api/login", json={"email": EMAIL, "password": "demo-password"})
    assert r.status_code == 503
