"""A Helm release left pending by a killed helm, on the sandbox: the Helm step recovers its own
and refuses anyone else's (issue 14, Helm recovery).

The chart is a small one of the test's own: its Deployment can be made never Ready (a node
selector no node matches), so `helm --wait` stays in its pending state until the test kills it,
as a worker crash mid-install or mid-upgrade would.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.helm_release import OPERATION_LABEL, operation_of, release_records
from activities.registry import MigrationActivities
from plan.contract import ChartRef, HelmInput, StepError
from plan.policies import ClusterRef
from tests.conftest import Sandbox
from tests.helpers import wait_for

pytestmark = pytest.mark.sandbox

RELEASE = "stuck"
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck-web}
spec:
  replicas: 1
  selector: {matchLabels: {app: stuck-web}}
  template:
    metadata: {labels: {app: stuck-web}}
    spec:
      {{- if .Values.stuck }}
      nodeSelector: {no-such-node: "true"}
      {{- end }}
      containers:
      - {name: web, image: nginx}
"""


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "stuck"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: stuck\nversion: 0.1.0\n")
    (root / "values.yaml").write_text("stuck: false\n")
    (root / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    return root


class Step:
    """One scheduled Helm step of one migration, run attempt by attempt as Temporal would."""

    def __init__(self, sandbox: Sandbox, namespace: str, chart: Path) -> None:
        self.sandbox, self.namespace, self.chart = sandbox, namespace, chart
        self.steps = MigrationActivities(ActivityContext(
            default_kubeconfig=str(sandbox.kubeconfig), helm=str(sandbox.toolchain["helm"])))
        self.ids = ("cilium-migrate-sandbox", "run-1", "5")

    def label(self, attempt: int) -> str:
        return operation_of(*self.ids, attempt=attempt).label

    def run(self, attempt: int, stuck: bool = False,
            heartbeat: dict[str, Any] | None = None) -> Any:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info, workflow_id=self.ids[0], workflow_run_id=self.ids[1],
            activity_id=self.ids[2], attempt=attempt,
            heartbeat_details=[heartbeat] if heartbeat else [])
        return env.run(self.steps.helm_upgrade, HelmInput(
            cluster=ClusterRef(name="sandbox"), release=RELEASE, namespace=self.namespace,
            chart=ChartRef(path=str(self.chart)), values={"stuck": stuck}, timeout_seconds=120))

    def kill_helm_midway(self, *extra: str, pending: str) -> dict[str, Any]:
        """Starts helm as an attempt would, kills it once its record is ``pending``, and
        returns what that attempt's last heartbeat said."""
        helm = subprocess.Popen(
            [str(self.sandbox.toolchain["helm"]), "upgrade", "--install", RELEASE,
             str(self.chart), "-n", self.namespace, "--kubeconfig",
             str(self.sandbox.kubeconfig), "--set", "stuck=true", "--wait",
             "--timeout", "600s", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.latest_status() == pending, what=f"helm to be {pending}")
        finally:
            helm.send_signal(signal.SIGKILL)
            helm.wait()
        assert self.latest_status() == pending  # as a killed helm leaves it, for good
        return {"helm": "upgrade", "helm_pid": helm.pid, "host": socket.gethostname()}

    def latest_status(self) -> str | None:
        records = release_records(self.sandbox.kube, self.namespace, RELEASE)
        return records[-1].status if records else None

    def statuses(self) -> list[tuple[int, str]]:
        return [(r.revision, r.status)
                for r in release_records(self.sandbox.kube, self.namespace, RELEASE)]


def test_the_helm_step_recovers_its_own_pending_install_and_upgrade(
        sandbox: Sandbox, namespace: str, chart: Path) -> None:
    step = Step(sandbox, namespace, chart)

    # Attempt 1 dies during the first install: revision 1 stays pending-install.
    heartbeat = step.kill_helm_midway("--labels", f"{OPERATION_LABEL}={step.label(1)}",
                                      pending="pending-install")
    # Attempt 2 on the same host sees that helm gone: it uninstalls and installs again.
    assert step.run(attempt=2, heartbeat=heartbeat).revision == 1
    assert step.statuses() == [(1, "deployed")]

    # Attempt 3 (say, its result was lost) upgrades and dies: revision 2 is pending-upgrade.
    heartbeat = step.kill_helm_midway("--labels", f"{OPERATION_LABEL}={step.label(3)}",
                                      pending="pending-upgrade")
    # Attempt 4 rolls back to revision 1 (revision 3) and upgrades (revision 4).
    assert step.run(attempt=4, heartbeat=heartbeat).revision == 4
    assert step.statuses()[-1] == (4, "deployed")
    assert json.loads(sandbox.kubectl(
        "get", "deployment", "stuck-web", "-n", namespace, "-o", "json").stdout
    )["spec"]["template"]["spec"].get("nodeSelector") is None


def test_a_young_pending_record_of_ours_waits_for_the_helm_that_may_still_run(
        sandbox: Sandbox, namespace: str, chart: Path) -> None:
    step = Step(sandbox, namespace, chart)
    step.kill_helm_midway("--labels", f"{OPERATION_LABEL}={step.label(1)}",
                          pending="pending-install")
    # This attempt runs elsewhere (no heartbeat from this host): it cannot know, so it waits.
    with pytest.raises(ApplicationError) as raised:
        step.run(attempt=2)
    assert raised.value.type == "HelmOperationRunning" and not raised.value.non_retryable
    assert raised.value.next_retry_delay is not None
    assert step.latest_status() == "pending-install"  # untouched


def test_someone_elses_pending_release_stops_the_step_with_what_to_do(
        sandbox: Sandbox, namespace: str, chart: Path) -> None:
    step = Step(sandbox, namespace, chart)
    step.run(attempt=1)
    # An operator's own upgrade, killed: its record carries the label Helm copied forward.
    heartbeat = step.kill_helm_midway(pending="pending-upgrade")
    with pytest.raises(ApplicationError) as raised:
        step.run(attempt=2, heartbeat=heartbeat)
    error = raised.value
    assert error.type == StepError.HELM_RELEASE_BUSY and error.non_retryable
    assert f"Helm release {RELEASE} in namespace {namespace} is pending-upgrade" in error.message
    assert f"`helm rollback {RELEASE} 1 -n {namespace}`" in error.message
    assert step.statuses() == [(1, "deployed"), (2, "pending-upgrade")]  # left to its owner
