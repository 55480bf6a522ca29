"""Installing or upgrading Cilium with Helm: the `helm` binary, run as a child process.

The chart validates the values (its JSON schema), so helm's own error output is what the
operator needs to read; it becomes the step's failure as is.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time

from activities.context import heartbeat, step_error
from plan.contract import HelmInput, HelmResult, StepError

# How often a running helm is looked at (and the step heartbeats).
POLL_SECONDS = 5.0


def helm_upgrade(helm: str, kubeconfig: str | None, request: HelmInput) -> HelmResult:
    """`helm upgrade --install` with the values in a temporary file (they hold no secrets)."""
    flags = ["-n", request.namespace]
    if kubeconfig:
        flags += ["--kubeconfig", kubeconfig]
    if request.cluster.context:
        flags += ["--kube-context", request.cluster.context]
    chart = request.chart
    with tempfile.NamedTemporaryFile("w", prefix="cilium-values-", suffix=".json") as values:
        json.dump(request.values, values)
        values.flush()
        argv = [helm, "upgrade", "--install", request.release, chart.path or chart.name,
                *flags, "--create-namespace", "--values", values.name,
                "--wait", "--timeout", f"{int(request.timeout_seconds)}s"]
        if chart.version:
            argv += ["--version", chart.version]
        if chart.repo and not chart.path:
            argv += ["--repo", chart.repo]
        run_helm(argv, request.timeout_seconds + 60)
    status = json.loads(run_helm([helm, "status", request.release, *flags, "-o", "json"], 60))
    return HelmResult(revision=int(status["version"]))


def run_helm(argv: list[str], timeout: float) -> str:
    """Runs helm, heartbeating while it works; its stderr is the error (schema errors too)."""
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    except OSError as error:
        raise step_error(StepError.HELM_FAILED, f"cannot run {argv[0]}: {error}") from error
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = process.communicate(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                raise step_error(StepError.HELM_FAILED,
                                 f"helm {argv[1]} did not finish within {timeout:.0f}s") from None
            heartbeat(helm=argv[1])
        except BaseException:  # cancelled: do not leave helm running behind us
            process.kill()
            raise
    if process.returncode != 0:
        raise step_error(StepError.HELM_FAILED,
                         f"helm {argv[1]} failed: {err.strip() or out.strip()}")
    return out
