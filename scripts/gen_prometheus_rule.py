"""Write deploy/kubernetes/monitoring/prometheusrule.yaml from deploy/prometheus/alerts.yml.

    python scripts/gen_prometheus_rule.py           # rewrite the PrometheusRule
    python scripts/gen_prometheus_rule.py --check   # exit 1 if it is stale (CI)

alerts.yml is the one source of the alert rules: a plain rule file for
``rule_files:``. The Prometheus Operator takes the same ``groups:`` as the spec of a
PrometheusRule; this wraps them (text-for-text, so every expression is byte-equal
to the source) in that object.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "deploy" / "prometheus" / "alerts.yml"
TARGET = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by scripts/gen_prometheus_rule.py:
# edit the source and rerun the script (CI runs it with --check).
#
# The alert rules for the Prometheus Operator. Apply it in the namespace of your
# Deployment with the PodMonitor (kubectl apply -k deploy/kubernetes/monitoring/);
# if your Prometheus selects rules by label (ruleSelector, e.g. kube-prometheus-stack's
# `release: <name>`), add that label with your kustomization's `labels:`.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: identity-sidecar
  labels:
    app.kubernetes.io/name: identity-sidecar
    app.kubernetes.io/component: alerting
spec:
"""


def render(source: str) -> str:
    """The PrometheusRule whose spec is the ``groups:`` of ``source``, lines indented unchanged."""
    lines = source.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise SystemExit(f"{SOURCE}: no top-level 'groups:' line") from None
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not what would be written")
    args = parser.parse_args(argv)
    wanted = render(SOURCE.read_text())
    current = TARGET.read_text() if TARGET.exists() else ""
    if current == wanted:
        return 0
    if args.check:
        diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(), str(TARGET), "generated", lineterm="")
        print("\n".join(diff))
        print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/gen_prometheus_rule.py", file=sys.stderr)
        return 1
    TARGET.write_text(wanted)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
