"""A real Prometheus (Debian's ``prometheus``) scrapes a real ``sidecar serve``; every PromQL
expression of the Grafana dashboard and the alert rules runs through its query API.

Prometheus and promtool are required, never skipped: ``make test`` installs them
(``scripts/apt.d/obs.txt``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import ROOT, SALT, free_port, sidecar_cmd, wait_serving

DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"
INSTALL = "install it with `make system` (scripts/apt.d/obs.txt) or `apt-get install prometheus`"

#: Grafana's variables, as the dashboard's "All" selection and a 1 s scrape resolve them.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m",
                "$job": ".+", "$instance": ".+", "${datasource}": ""}
#: Panels that may legitimately be empty here: nothing in this test evaluates events.
MAY_BE_EMPTY = {"Event decisions"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: {INSTALL}"
    return path


def substitute(expr: str) -> str:
    for var, val in GRAFANA_VARS.items():
        expr = expr.replace(var, val)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


@dataclass
class Stack:
    prom: str  # http://127.0.0.1:port
    metrics: str  # 127.0.0.1:port of the sidecar's /metrics
    grpc_addr: str
    issued: int
    rejected: dict[str, int]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar", "matrix"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] != "scalar" else [data]
        return result


def _wait(what: str, ok: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok():
                return
        except (OSError, AssertionError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _calls(addr: str) -> tuple[int, dict[str, int]]:
    issued, rejected = 0, {"email_format": 0, "uuid_format": 0}
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.IdentityServiceStub(ch)
        for i in range(5):
            stub.ResolveIdentity(pb.ResolveIdentityRequest(email=f"c{i}@example.com", cookie_uuid=COOKIE))
            stub.IssueToken(pb.IssueTokenRequest(email=f"c{i}@example.com", uuid=COOKIE))
            issued += 2
        for email, uuid, reason in (("bad", COOKIE, "email_format"), ("a@b.c", "nope", "uuid_format")):
            for _ in range(2):
                with pytest.raises(grpc.RpcError):
                    stub.IssueToken(pb.IssueTokenRequest(email=email, uuid=uuid))
                rejected[reason] += 1
    return issued, rejected


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, openssl_keys: Path) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    grpc_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "PROMETHEUS_"))}
    env.update(SIDECAR_LISTEN=grpc_addr, SIDECAR_METRICS_ADDR=metrics_addr,
               SIDECAR_KEY_FILE=str(openssl_keys / "private.pem"),
               SIDECAR_UUID_SALT=SALT, SIDECAR_AUDIT_LEVEL="OFF", PYTHONPATH=str(ROOT))
    with (tmp / "sidecar.log").open("wb") as log:
        sidecar = subprocess.Popen(sidecar_cmd("serve"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    prom_port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {ALERTS}\n"
        "scrape_configs:\n  - job_name: sidecar\n"
        f"    static_configs:\n      - targets: ['{metrics_addr}']\n")
    with (tmp / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_serving(grpc_addr, sidecar)
        s = Stack(f"http://127.0.0.1:{prom_port}", metrics_addr, grpc_addr, 0, {})
        _wait("prometheus ready", lambda: urllib.request.urlopen(f"{s.prom}/-/ready", timeout=2).status == 200)
        _wait("a first scrape of the sidecar (series at 0)",
              lambda: [r["value"][1] for r in s.query('sidecar_tokens_issued_total{rpc="IssueToken"}')] == ["0"])
        s.issued, s.rejected = _calls(grpc_addr)
        _wait("the traffic in Prometheus", lambda: [
            s.query("sum(sidecar_tokens_issued_total)")[0]["value"][1],
            s.query("sum(sidecar_token_rejections_total)")[0]["value"][1],
        ] == [str(s.issued), str(sum(s.rejected.values()))])
        # two more scrapes so rate() over the window has points after the traffic
        _wait("two more scrapes", lambda: len(s.query("sidecar_build_info[1m]")[0]["values"]) >= 5)
        yield s
    finally:
        for p in (prom, sidecar):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_scrape_is_up_and_counts_match(stack):
    assert [r["value"][1] for r in stack.query('up{job="sidecar"}')] == ["1"]
    issued = {r["metric"]["rpc"]: r["value"][1] for r in stack.query("sidecar_tokens_issued_total")}
    assert issued == {"ResolveIdentity": "5", "IssueToken": "5"}
    rejected = {r["metric"]["reason"]: r["value"][1]
                for r in stack.query('sidecar_token_rejections_total{rpc="IssueToken"} > 0')}
    assert rejected == {k: str(v) for k, v in stack.rejected.items()}
    outcomes = {r["metric"]["outcome"]: r["value"][1] for r in stack.query("sidecar_identity_resolutions_total")}
    assert outcomes == {"new_identity": "5", "same_identity": "0", "switched_identity": "0"}


@pytest.mark.parametrize(("title", "expr"), dashboard_targets(),
                         ids=[f"{t}#{i}" for i, (t, _) in enumerate(dashboard_targets())])
def test_every_dashboard_query_runs(stack, title, expr):
    result = stack.query(substitute(expr))
    if title not in MAY_BE_EMPTY:
        assert result, f"panel {title!r} shows no data: {expr}"


def test_issuance_and_rejection_panels_show_the_traffic(stack):
    exprs = dict(dashboard_targets())
    by_rpc = {r["metric"]["rpc"]: float(r["value"][1])
              for r in stack.query(substitute(exprs["Issuance rate by RPC"]))}
    assert set(by_rpc) == {"ResolveIdentity", "IssueToken"} and all(v > 0 for v in by_rpc.values())
    by_reason = {r["metric"]["reason"]: float(r["value"][1])
                 for r in stack.query(substitute(exprs["Rejections by reason"]))}
    assert set(by_reason) == set(stack.rejected) and all(v > 0 for v in by_reason.values())
    (ratio,) = stack.query(substitute(exprs["Rejection ratio"]))
    assert 0 < float(ratio["value"][1]) < 1
    (key,) = stack.query(substitute(exprs["Active signing key"]))
    assert key["metric"]["bits"] == "2048" and len(key["metric"]["key_id"]) == 43
    errors = {(r["metric"]["grpc_method"], r["metric"]["grpc_code"])
              for r in stack.query(substitute(exprs["Error codes by method"]))}
    assert errors == {("IssueToken", "InvalidArgument")}


def test_dashboard_variables_resolve(stack):
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name, label in (("job", "job"), ("instance", "instance")):
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["query"]["query"])
        assert m and m.group(2) == label
        found = stack.api(f"label/{label}/values", **{"match[]": substitute(m.group(1))})
        assert found == (["sidecar"] if name == "job" else [stack.metrics])


def test_dashboard_has_no_hard_coded_datasource():
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text)) - {"synerise-identity-sidecar"}
    assert uids == {"${datasource}"}

    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "datasource" in node and isinstance(node["datasource"], dict | str):
                yield node["datasource"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    sources = list(walk(json.loads(text)["panels"]))
    assert sources and all(ds == {"type": "prometheus", "uid": "${datasource}"} for ds in sources)


def test_alert_rules_load_and_every_expression_runs(stack):
    groups = stack.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert names == set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))
    assert len(names) == 6
    for rule in rules:
        _wait(f"rule {rule['name']} evaluated", lambda name=rule["name"]: next(
            r for g in stack.api("rules")["groups"] for r in g["rules"] if r["name"] == name)["health"] == "ok",
            timeout=20)
        stack.query(rule["query"])  # parses and runs; most are (rightly) empty on a healthy sidecar
    firing = {a["labels"]["alertname"] for a in stack.api("alerts")["alerts"]}
    assert "SidecarDown" not in firing and "SidecarNoTokensIssued" not in firing


def test_promtool_checks_rules_and_runs_their_unit_tests():
    promtool = tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 6 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent,
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_lints_the_live_metrics(stack):
    body = urllib.request.urlopen(f"http://{stack.metrics}/metrics", timeout=5).read()
    r = subprocess.run([tool("promtool"), "check", "metrics"], input=body, check=False, capture_output=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout + r.stderr).decode()
