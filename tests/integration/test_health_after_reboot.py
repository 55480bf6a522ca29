"""The health check between waves, right after a reboot: the node comes back, its flannel and
Cilium pods restart, and the DaemonSet controller's counts catch up some time later. The check
must wait for that, not halt the migration on the first look."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import HealthInput, HealthReport
from plan.policies import ClusterRef
from plan.spec import DEFAULT_IMAGE
from sandbox.simulator.faults import Fault
from tests.conftest import CILIUM_POOL, Sandbox
from tests.helpers import FaultSwitch, wait_for

pytestmark = pytest.mark.sandbox

HEALTH = HealthInput(cluster=ClusterRef(name="sandbox"), cilium_namespace="kube-system",
                     cilium_pools=[CILIUM_POOL], flannel_namespace="kube-flannel",
                     flannel_daemonset="kube-flannel-ds")


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox, cilium: None) -> MigrationActivities:
    return MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))


@pytest.fixture
def stuck_reboot(sandbox: Sandbox) -> Iterator[FaultSwitch]:
    """Makes a node's next reboot hang; switching it off power-cycles the node."""
    switch = FaultSwitch(sandbox.state_dir, Fault.REBOOT_NEVER_COMPLETES)
    yield switch
    switch.clear_all()


def node_ready(sandbox: Sandbox, node: str) -> bool:
    conditions = sandbox.kube.get(f"/api/v1/nodes/{node}")["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def reboot(sandbox: Sandbox, namespace: str, node: str) -> None:
    """What the node-shell strategy does: a privileged host-PID pod that asks for a reboot."""
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods", {
        "metadata": {"name": "reboot"},
        "spec": {"nodeName": node, "hostPID": True, "hostNetwork": True,
                 "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "shell", "image": DEFAULT_IMAGE,
                                 "command": ["nsenter", "--target", "1", "--", "reboot"],
                                 "securityContext": {"privileged": True}}]}})


def test_health_right_after_a_reboot_waits_for_the_node_and_its_daemonsets(
        sandbox: Sandbox, steps: MigrationActivities, namespace: str,
        stuck_reboot: Any) -> None:
    # The sandbox is shared: whatever other tests left behind is the baseline.
    before = ActivityEnvironment().run(steps.check_health, HEALTH)
    node = sandbox.claim_worker()
    assert not any(node in problem for problem in before.problems), before.problems
    stuck_reboot(node)
    reboot(sandbox, namespace, node)
    wait_for(lambda: not node_ready(sandbox, node), f"{node} to go down")

    # The check starts while the node is down. Once it has looked (it heartbeats while it
    # waits), the machine is power-cycled: the node boots, its pods restart, and the
    # DaemonSets' counts catch up.
    looked = threading.Event()
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: (beats.append(details), looked.set())
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(env.run, steps.check_health, HEALTH)
        wait_for(lambda: looked.is_set() or running.done(), "the health check to look")
        stuck_reboot(node, on=False)
        report: HealthReport = running.result(timeout=180)

    assert report.problems == before.problems
    assert report.flannel_ready == before.flannel_ready
    assert any(f"node {node} is not Ready" in str(beat) for beat in beats)
