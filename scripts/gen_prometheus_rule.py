"""Write deploy/kubernetes/monitoring/prometheusrule.yaml from deploy/prometheus/alerts.yml.

    python scripts/gen_prometheus_rule.py           # rewrite the PrometheusRule
    python scripts/gen_prometheus_rule.py --check   # exit 1 if it is stale (CI)

alerts.yml is the one source of the alert rules: a plain rule file for
``rule_files:``. The Prometheus Operator takes the same ``groups:`` as the spec of a
PrometheusRule; this wraps them (text-for-text, so every expression is byte-equal
to the source) in that object.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generated  # (beside this file)

ROOT = generated.ROOT
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
    return generated.main(TARGET, lambda: render(SOURCE.read_text()), script="gen_prometheus_rule.py",
                          description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    sys.exit(main())
