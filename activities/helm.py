"""Installing or upgrading Cilium with Helm: the `helm` binary, run as a child process.

The chart validates the values (its JSON schema and `validate.yaml`), so helm's own error output
is what the operator needs to read; it becomes the step's failure as is. A release left pending
by an earlier attempt of the same step is recovered first (`helm_release`).
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities import helm_release
from activities.chart_source import fetch_chart
from activities.context import step_error
from activities.helm_cli import run_helm
from activities.helm_release import OPERATION_LABEL, Operation
from activities.kubeapi import Kube
from plan.contract import HelmInput, HelmResult, StepError

# While an earlier attempt's helm may still run, the step looks again this often.
RECHECK = timedelta(seconds=30)


def helm_upgrade(helm: str, kubeconfig: str | None, kube: Kube, request: HelmInput,
                 operation: Operation, last_heartbeat: dict[str, object]) -> HelmResult:
    """`helm upgrade --install` of the chart as pulled here (so the digest recorded is the
    digest of what ran), with the values in a temporary file (they hold no secrets), after
    recovering a release this step's earlier attempt left pending."""
    flags = ["-n", request.namespace]
    if kubeconfig:
        flags += ["--kubeconfig", kubeconfig]
    if request.cluster.context:
        flags += ["--kube-context", request.cluster.context]
    timeout = f"{int(request.timeout_seconds)}s"
    _recover(helm, flags, kube, request, operation, last_heartbeat)
    with tempfile.TemporaryDirectory(prefix="cilium-chart-") as scratch:
        chart = fetch_chart(helm, request.chart, Path(scratch))
        values = Path(scratch) / "values.json"
        values.write_text(json.dumps(request.values))
        run_helm([helm, "upgrade", "--install", request.release, str(chart.location), *flags,
                  "--create-namespace", "--values", str(values),
                  "--labels", f"{OPERATION_LABEL}={operation.label}",
                  "--wait", "--timeout", timeout],
                 request.timeout_seconds + 60)
    status = json.loads(run_helm([helm, "status", request.release, *flags, "-o", "json"], 60))
    return HelmResult(revision=int(status["version"]), chart=chart.installed_from(request.chart))


def _recover(helm: str, flags: list[str], kube: Kube, request: HelmInput,
             operation: Operation, last_heartbeat: dict[str, object]) -> None:
    records = helm_release.release_records(kube, request.namespace, request.release)
    decision = helm_release.recovery(
        records, operation, timedelta(seconds=request.timeout_seconds),
        helm_release.now_utc(), helm_release.writer_gone(last_heartbeat),
        request.release, request.namespace)
    timeout = f"{int(request.timeout_seconds)}s"
    match decision.action:
        case "none":
            return
        case "refuse":
            raise step_error(StepError.HELM_RELEASE_BUSY, decision.reason)
        case "wait":
            # Retried by Temporal: the wait is not held inside one attempt, whose own
            # deadline is sized for the helm call alone.
            raise ApplicationError(
                f"{decision.reason}; looking again in {RECHECK.seconds}s",
                type="HelmOperationRunning",
                next_retry_delay=min(decision.wait or RECHECK, RECHECK))
        case "uninstall":
            run_helm([helm, "uninstall", request.release, *flags, "--wait", "--timeout",
                      timeout], request.timeout_seconds + 60)
        case "rollback":
            run_helm([helm, "rollback", request.release, str(decision.to_revision), *flags,
                      "--timeout", timeout], request.timeout_seconds + 60)
