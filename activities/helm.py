"""Installing or upgrading Cilium with Helm: the `helm` binary, run as a child process.

The chart validates the values (its JSON schema and `validate.yaml`), so helm's own error output
is what the operator needs to read; it becomes the step's failure as is.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from activities.chart_source import fetch_chart
from activities.helm_cli import run_helm
from plan.contract import HelmInput, HelmResult


def helm_upgrade(helm: str, kubeconfig: str | None, request: HelmInput) -> HelmResult:
    """`helm upgrade --install` of the chart as pulled here (so the digest recorded is the
    digest of what ran), with the values in a temporary file (they hold no secrets)."""
    flags = ["-n", request.namespace]
    if kubeconfig:
        flags += ["--kubeconfig", kubeconfig]
    if request.cluster.context:
        flags += ["--kube-context", request.cluster.context]
    with tempfile.TemporaryDirectory(prefix="cilium-chart-") as scratch:
        chart = fetch_chart(helm, request.chart, Path(scratch))
        values = Path(scratch) / "values.json"
        values.write_text(json.dumps(request.values))
        run_helm([helm, "upgrade", "--install", request.release, str(chart.location), *flags,
                  "--create-namespace", "--values", str(values),
                  "--wait", "--timeout", f"{int(request.timeout_seconds)}s"],
                 request.timeout_seconds + 60)
    status = json.loads(run_helm([helm, "status", request.release, *flags, "-o", "json"], 60))
    return HelmResult(revision=int(status["version"]), chart=chart.installed_from(request.chart))
