"""A real Prometheus (Debian's ``prometheus``) scrapes a real ``sidecar serve``; every PromQL
expression of the Grafana dashboard and the alert rules runs through its query API.

Prometheus and promtool are required, never skipped: ``make test`` installs them
(``scripts/apt.d/obs.txt``).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sidecar.v1 import identity_pb2 as pb
from sidecar.v1 import identity_pb2_grpc as pb_grpc
from tests.conftest import ROOT, SALT, free_port, sidecar_cmd, wait_serving

DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PODMONITOR = ROOT / "deploy" / "kubernetes" / "monitoring" / "podmonitor.yaml"
EXAMPLE = ROOT / "deploy" / "kubernetes" / "example"
COOKIE = "0f8fad5b-d9cb-469f-a165-70867728950e"
INSTALL = "install it with `make system` (scripts/apt.d/obs.txt) or `apt-get install prometheus`"
NAMESPACE = "shop"
BUSY, IDLE = "my-backend-7d9c5-busy1", "my-backend-7d9c5-idle1"
#: The job the Prometheus Operator gives the shipped PodMonitor's targets in namespace shop.
JOB = f"{NAMESPACE}/identity-sidecar"

#: Grafana's variables, as the dashboard's "All" selection and a 1 s scrape resolve them.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m",
                "$namespace": ".*", "$job": ".*", "$pod": ".*", "${datasource}": ""}
#: Panels that may legitimately be empty here: nothing in this test evaluates events, and
#: the scheduled-rotation metrics (SPEC section 8) may not be exported yet.
MAY_BE_EMPTY = {"Event decisions", "Keys per pod", "Cut-over in", "Keys signing", "Pods without the next key"}
#: Labels the rules and panels may name that no series here carries: SPEC section 8's ``state``
#: (issue 19's metrics), and the event-decision labels (no event is evaluated here).
NOT_SEEN_HERE = {"state", "decision", "rule"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: {INSTALL}"
    return path


def substitute(expr: str, **overrides: str) -> str:
    for var, val in {**GRAFANA_VARS, **{f"${k}": v for k, v in overrides.items()}}.items():
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


def rendered_pod_template() -> dict[str, Any]:
    """The pod template of the example Deployment as ``kubectl kustomize`` renders it with the component."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: scripts/apt.d/deploy.txt"
    out = subprocess.run([kubectl, "kustomize", str(EXAMPLE)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    (deploy,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment"]
    template: dict[str, Any] = deploy["spec"]["template"]
    return template


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def operator_scrape_config(monitor: dict[str, Any], namespace: str, pods: dict[str, str],
                           template: dict[str, Any]) -> dict[str, Any]:
    """The scrape config the Prometheus Operator generates for ``monitor`` (its podMetricsEndpoints[0]),
    with the Kubernetes pod discovery replaced by static targets that carry the ``__meta_kubernetes_*``
    labels pod discovery gives each container port of ``template`` (``pods``: pod name -> address).

    The relabelling follows the operator's generatePodMonitorConfig (pkg/prometheus/promcfg.go):
    drop finished pods, keep the selector's labels, keep the port (name or number), copy namespace,
    container and pod, then job = "<namespace>/<PodMonitor name>" unless jobLabel names a pod label,
    and endpoint = the port name when the endpoint names one.
    """
    spec = monitor["spec"]
    (ep,) = spec["podMetricsEndpoints"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]
    for k, v in sorted(spec["selector"].get("matchLabels", {}).items()):
        relabel.append({"action": "keep", "regex": f"({v});true",
                        "source_labels": [f"__meta_kubernetes_pod_label_{_sanitize(k)}",
                                          f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"]})
    assert "matchExpressions" not in spec["selector"], "extend the translation for matchExpressions"
    if ep.get("port"):
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": ep["port"]})
    elif ep.get("portNumber"):
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                        "regex": str(ep["portNumber"])})
    relabel += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{namespace}/{monitor['metadata']['name']}"},
    ]
    if spec.get("jobLabel"):
        relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{_sanitize(spec['jobLabel'])}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    if ep.get("port"):
        relabel.append({"target_label": "endpoint", "replacement": ep["port"]})
    # What pod discovery gives: one target per declared port of every container, init containers included.
    statics = []
    labels = template["metadata"]["labels"]
    spec_pod = template["spec"]
    containers = [(c, "true") for c in spec_pod.get("initContainers", [])] + \
                 [(c, "false") for c in spec_pod["containers"]]
    for pod, address in pods.items():
        for c, init in containers:
            for port in c.get("ports", []):
                meta = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod,
                        "__meta_kubernetes_pod_phase": "Running",
                        "__meta_kubernetes_pod_container_name": c["name"],
                        "__meta_kubernetes_pod_container_init": init,
                        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}
                for k, v in labels.items():
                    meta[f"__meta_kubernetes_pod_label_{_sanitize(k)}"] = v
                    meta[f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"] = "true"
                # The pod IP and this port; only the metrics port's target is scraped, at the real sidecar.
                target = address if port["containerPort"] == ep.get("portNumber") else f"127.0.0.1:{port['containerPort']}"
                statics.append({"targets": [target], "labels": meta})
    return {"job_name": f"podMonitor/{namespace}/{monitor['metadata']['name']}/0",
            "metrics_path": ep.get("path", "/metrics"), "scrape_interval": "1s", "scrape_timeout": "1s",
            "static_configs": statics, "relabel_configs": relabel}


class _Cadvisor(http.server.BaseHTTPRequestHandler):
    """cAdvisor's CFS counters for the sidecar containers, growing with time (the throttling panel's input)."""

    started = time.monotonic()

    def do_GET(self) -> None:
        elapsed = time.monotonic() - self.started
        lines = ["# TYPE container_cpu_cfs_periods_total counter",
                 "# TYPE container_cpu_cfs_throttled_periods_total counter"]
        for pod, share in ((BUSY, 0.25), (IDLE, 0.0)):
            lab = f'namespace="{NAMESPACE}",pod="{pod}",container="sidecar"'
            lines.append(f"container_cpu_cfs_periods_total{{{lab}}} {int(elapsed * 10)}")
            lines.append(f"container_cpu_cfs_throttled_periods_total{{{lab}}} {int(elapsed * 10 * share)}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stack:
    prom: str  # http://127.0.0.1:port
    metrics: str  # 127.0.0.1:port of the busy sidecar's /metrics
    idle_metrics: str
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
        token = stub.IssueToken(pb.IssueTokenRequest(email="v@example.com", uuid=COOKIE)).token.jwt
        issued += 1
        assert stub.VerifyToken(pb.VerifyTokenRequest(jwt=token)).valid
        assert stub.VerifyToken(pb.VerifyTokenRequest(jwt="not.a.jwt")).reason == "malformed"
    return issued, rejected


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, openssl_keys: Path) -> Iterator[Stack]:
    """Two real sidecars (one gets traffic, one stays idle) scraped by a real Prometheus under the
    relabelling the Prometheus Operator makes of the shipped PodMonitor, as pods of the rendered example."""
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    template = rendered_pod_template()
    procs: list[subprocess.Popen[bytes]] = []
    addrs = {}
    for pod in (BUSY, IDLE):
        grpc_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "PROMETHEUS_"))}
        env.update(SIDECAR_LISTEN=grpc_addr, SIDECAR_METRICS_ADDR=metrics_addr,
                   SIDECAR_KEY_FILE=str(openssl_keys / "private.pem"),
                   SIDECAR_UUID_SALT=SALT, SIDECAR_AUDIT_LEVEL="OFF", PYTHONPATH=str(ROOT))
        with (tmp / f"{pod}.log").open("wb") as log:
            procs.append(subprocess.Popen(sidecar_cmd("serve"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=log))
        addrs[pod] = (grpc_addr, metrics_addr)
    cadvisor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cadvisor)
    threading.Thread(target=cadvisor.serve_forever, daemon=True).start()
    monitor = yaml.safe_load(PODMONITOR.read_text())
    scrape = operator_scrape_config(monitor, NAMESPACE, {pod: a[1] for pod, a in addrs.items()}, template)
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(ALERTS)],
              "scrape_configs": [scrape, {"job_name": "kubelet-cadvisor", "honor_labels": True,
                                          "static_configs": [{"targets": [f"127.0.0.1:{cadvisor.server_port}"]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        for pod, proc in zip((BUSY, IDLE), procs, strict=True):
            wait_serving(addrs[pod][0], proc)
        s = Stack(f"http://127.0.0.1:{prom_port}", addrs[BUSY][1], addrs[IDLE][1], addrs[BUSY][0], 0, {})
        _wait("prometheus ready", lambda: urllib.request.urlopen(f"{s.prom}/-/ready", timeout=2).status == 200)
        _wait("a first scrape of both sidecars (series at 0)", lambda: sorted(
            r["value"][1] for r in s.query('sidecar_tokens_issued_total{rpc="IssueToken"}')) == ["0", "0"])
        s.issued, s.rejected = _calls(s.grpc_addr)
        _wait("the traffic in Prometheus", lambda: [
            s.query("sum(sidecar_tokens_issued_total)")[0]["value"][1],
            s.query("sum(sidecar_token_rejections_total)")[0]["value"][1],
        ] == [str(s.issued), str(sum(s.rejected.values()))])
        # two more scrapes so rate() over the window has points after the traffic
        _wait("two more scrapes", lambda: min(
            len(r["values"]) for r in s.query("sidecar_build_info[1m]")) >= 5)
        yield s
    finally:
        cadvisor.shutdown()
        cadvisor.server_close()
        for p in (prom, *procs):
            _stop(p)


def test_targets_carry_the_operators_labels(stack):
    """Only the metrics port of the sidecar is scraped, with the job and labels the rules select."""
    up = {r["metric"]["pod"]: r["metric"] for r in stack.query('up{job!="kubelet-cadvisor"}')}
    assert set(up) == {BUSY, IDLE}
    assert up[BUSY] == {"__name__": "up", "job": JOB, "namespace": NAMESPACE, "pod": BUSY, "container": "sidecar",
                        "instance": stack.metrics}
    assert all(r["value"][1] == "1" for r in stack.query(f'up{{job="{JOB}"}}'))
    # the selector every rule uses matches them
    assert len(stack.query('up{job=~"(.+/)?identity-sidecar"}')) == 2


def test_scrape_is_up_and_counts_match(stack):
    busy = f'{{job="{JOB}", pod="{BUSY}"}}'
    issued = {r["metric"]["rpc"]: r["value"][1] for r in stack.query(f"sidecar_tokens_issued_total{busy}")}
    assert issued == {"ResolveIdentity": "5", "IssueToken": "6"}
    verified = {r["metric"]["result"]: r["value"][1]
                for r in stack.query(f"sidecar_token_verifications_total{busy} > 0")}
    assert verified == {"valid": "1", "malformed": "1"}
    assert stack.query(f"sidecar_rpcs_in_flight{busy}")[0]["value"][1] == "0"  # every call answered
    (cpu,) = stack.query(f"process_cpu_seconds_total{busy}")
    assert float(cpu["value"][1]) > 0
    rejected = {r["metric"]["reason"]: r["value"][1]
                for r in stack.query(f'sidecar_token_rejections_total{{pod="{BUSY}", rpc="IssueToken"}} > 0')}
    assert rejected == {k: str(v) for k, v in stack.rejected.items()}
    outcomes = {r["metric"]["outcome"]: r["value"][1]
                for r in stack.query(f"sidecar_identity_resolutions_total{busy}")}
    assert outcomes == {"new_identity": "5", "same_identity": "0", "switched_identity": "0"}
    assert float(stack.query(f'sum(sidecar_tokens_issued_total{{pod="{IDLE}"}})')[0]["value"][1]) == 0


@pytest.mark.parametrize(("title", "expr"), dashboard_targets(),
                         ids=[f"{t}#{i}" for i, (t, _) in enumerate(dashboard_targets())])
def test_every_dashboard_query_runs(stack, title, expr):
    result = stack.query(substitute(expr))
    if title not in MAY_BE_EMPTY:
        assert result, f"panel {title!r} shows no data: {expr}"


@pytest.mark.parametrize(("title", "expr"), dashboard_targets(),
                         ids=[f"{t}#{i}" for i, (t, _) in enumerate(dashboard_targets())])
def test_no_panel_reads_nan_on_an_idle_pod(stack, title, expr):
    """With only the idle pod selected, a panel shows 0 or nothing, never NaN (0/0, a quantile of no calls)."""
    for r in stack.query(substitute(expr, pod=IDLE)):
        values = [v for _, v in r["values"]] if "values" in r else [r["value"][1]]
        assert all(v.lower() not in ("nan", "+inf", "-inf") for v in values), f"{title!r} reads {values}: {expr}"


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
    (idle_ratio,) = stack.query(substitute(exprs["Rejection ratio"], pod=IDLE))
    assert float(idle_ratio["value"][1]) == 0
    (key,) = stack.query(substitute(exprs["Active signing key"]))
    assert key["metric"]["bits"] == "2048" and len(key["metric"]["key_id"]) == 43
    errors = {(r["metric"]["grpc_method"], r["metric"]["grpc_code"])
              for r in stack.query(substitute(exprs["Error codes by method"]))}
    assert errors == {("IssueToken", "InvalidArgument")}
    per_pod = {r["metric"]["pod"] for r in stack.query(substitute(exprs["p99 RPC latency per pod"]))}
    # The idle pod shows one too: it answers its own liveness self-check, a GetPublicKey a second.
    assert per_pod == {BUSY, IDLE}
    throttling = {r["metric"]["pod"]: float(r["value"][1])
                  for r in stack.query(substitute(exprs["CPU throttling"]))}
    assert throttling.keys() == {BUSY, IDLE} and 0.1 < throttling[BUSY] < 0.4 and throttling[IDLE] == 0


def test_dashboard_variables_resolve(stack):
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    want = {"namespace": [NAMESPACE], "job": [JOB], "pod": sorted([BUSY, IDLE])}
    for name, label in (("namespace", "namespace"), ("job", "job"), ("pod", "pod")):
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name]["query"]["query"])
        assert m and m.group(2) == label
        # "All" is ".*" so that a plain scrape config's series (no namespace or pod label) still match
        assert variables[name]["allValue"] == ".*"
        found = stack.api(f"label/{label}/values", **{"match[]": substitute(m.group(1))})
        assert found == want[name]


#: PromQL words that look like label names in the patterns below.
_LABEL_LISTS = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_MATCHERS = re.compile(r"\{([^{}]*)\}")


def referenced_labels(expr: str) -> set[str]:
    names = set()
    for group in _LABEL_LISTS.findall(expr):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    for group in _MATCHERS.findall(expr):
        names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", group))
    return names - {"__name__"}


def test_rules_and_panels_reference_only_labels_the_scrape_produces(stack):
    """Every label a rule or panel groups, joins or filters on exists on the series scraped under the
    shipped PodMonitor's relabelling (or is a metric label of SPEC section 8 not exported yet)."""
    present = set(stack.api("labels"))
    exprs = [e for _, e in dashboard_targets()]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    missing = {(label, e) for e in exprs for label in referenced_labels(e) if label not in present | NOT_SEEN_HERE}
    assert not missing
    assert {"namespace", "pod", "job", "instance"} <= present


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
    assert len(names) == 11
    for rule in rules:
        _wait(f"rule {rule['name']} evaluated", lambda name=rule["name"]: next(
            r for g in stack.api("rules")["groups"] for r in g["rules"] if r["name"] == name)["health"] == "ok",
            timeout=20)
        stack.query(rule["query"])  # parses and runs; most are (rightly) empty on a healthy sidecar
    active = {a["labels"]["alertname"] for a in stack.api("alerts")["alerts"]}  # pending or firing
    assert not active & {"SidecarDown", "SidecarTargetMissing", "SidecarTargetsGone", "SidecarNoTokensIssued"}


def test_promtool_checks_rules_and_runs_their_unit_tests():
    promtool = tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 11 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent,
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_runbook_section():
    observability = (ROOT / "docs" / "observability.md").read_text()
    anchors = {re.sub(r"[^a-z0-9_-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^#+ (.+)$", observability, re.M)}
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("/docs/observability.md") and anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"docs/observability.md has no section {rule['alert']}"


def test_every_alert_is_unit_tested_firing():
    """alerts_test.yml expects each alert to fire at least once (a rule never seen firing proves nothing)."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t.get("exp_alerts")}
    rules = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert fired == rules


def test_the_prometheusrule_is_generated_from_the_rule_file():
    spec = importlib.util.spec_from_file_location("gen_prometheus_rule", ROOT / "scripts" / "gen_prometheus_rule.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render(ALERTS.read_text()) == gen.TARGET.read_text(), "run python scripts/gen_prometheus_rule.py"
    rule = yaml.safe_load(gen.TARGET.read_text())
    assert rule["kind"] == "PrometheusRule" and rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_promtool_lints_the_live_metrics(stack):
    body = urllib.request.urlopen(f"http://{stack.metrics}/metrics", timeout=5).read()
    r = subprocess.run([tool("promtool"), "check", "metrics"], input=body, check=False, capture_output=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout + r.stderr).decode()


def _proc_stat(pid: int) -> tuple[float, float]:
    """(resident bytes, user+system CPU seconds) of ``pid`` from /proc."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return float(parts[21]) * os.sysconf("SC_PAGE_SIZE"), (float(parts[11]) + float(parts[12])) / ticks


def test_workers_mode_exports_process_metrics_summed_over_master_and_workers(tmp_path, openssl_keys):
    """``--workers 2``: one series per process_* metric for the whole sidecar, the sum over the master and
    its live workers (start time and fd limit the master's); python_info; the in-flight gauge."""
    from prometheus_client.parser import text_string_to_metric_families

    grpc_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "PROMETHEUS_"))}
    env.update(SIDECAR_LISTEN=grpc_addr, SIDECAR_METRICS_ADDR=metrics_addr, SIDECAR_WORKERS="2",
               SIDECAR_KEY_FILE=str(openssl_keys / "private.pem"), SIDECAR_UUID_SALT=SALT,
               SIDECAR_AUDIT_LEVEL="OFF", PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    with (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen(sidecar_cmd("serve"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_serving(grpc_addr, proc)
        with grpc.insecure_channel(grpc_addr) as ch:
            pb_grpc.IdentityServiceStub(ch).IssueToken(pb.IssueTokenRequest(email="w@example.com", uuid=COOKIE))
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2
        body = urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5).read().decode()
        samples = {s.name: s for f in text_string_to_metric_families(body) for s in f.samples}
        names = [s.name for f in text_string_to_metric_families(body) for s in f.samples
                 if s.name.startswith("process_")]
        assert sorted(names) == sorted(set(names)) and len(names) == 6  # one series each
        rss = [_proc_stat(pid)[0] for pid in (proc.pid, *children)]
        assert 0.8 * sum(rss) < samples["process_resident_memory_bytes"].value < 1.25 * sum(rss)
        assert samples["process_resident_memory_bytes"].value > 1.5 * max(rss)  # a sum, not one process
        cpu = sum(_proc_stat(pid)[1] for pid in (proc.pid, *children))
        assert samples["process_cpu_seconds_total"].value >= 0.9 * cpu > 0
        master_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert samples["process_open_fds"].value > master_fds
        assert "python_info" in samples
        assert samples["sidecar_rpcs_in_flight"].value == 0
        r = subprocess.run([tool("promtool"), "check", "metrics"], input=body.encode(), capture_output=True,
                           check=False)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()
    finally:
        _stop(proc)


def test_in_flight_gauge_counts_a_call_until_it_is_answered():
    from prometheus_client import CollectorRegistry

    from sidecar.telemetry.rpc_metrics import RpcMetrics

    reg = CollectorRegistry()
    series = RpcMetrics(reg, [("unary", "sidecar.v1.IdentityService", "IssueToken")]).series(
        "/sidecar.v1.IdentityService/IssueToken", "unary")
    assert reg.get_sample_value("sidecar_rpcs_in_flight") == 0
    series.start()
    series.start()
    assert reg.get_sample_value("sidecar_rpcs_in_flight") == 2
    series.done("OK", time.perf_counter())
    series.done("CANCELLED", time.perf_counter())
    assert reg.get_sample_value("sidecar_rpcs_in_flight") == 0
