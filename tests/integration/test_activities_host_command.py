"""Host commands through node-shell pods: the file moves of a rollback, the Event recorded when
one succeeds, and failures that carry the command's own words."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import (
    HostCommandInput,
    LabelInput,
    NodeConfigInput,
    NodeNote,
    NodeRef,
    RestartAgentInput,
    StepError,
)
from plan.policies import ClusterRef
from plan.spec import DEFAULT_IMAGE
from tests.conftest import Sandbox

pytestmark = pytest.mark.sandbox

CLUSTER = ClusterRef(name="sandbox")
IMAGE = DEFAULT_IMAGE
NET_D = "/etc/cni/net.d"
ROLLBACK = (f"rm -f {NET_D}/05-cilium.conflist && "
            f"mv {NET_D}/10-flannel.conflist.cilium_bak {NET_D}/10-flannel.conflist")


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox, cilium: None) -> MigrationActivities:
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))
    ActivityEnvironment().run(steps.apply_node_config, NodeConfigInput(
        cluster=CLUSTER, namespace="kube-system", name="cilium-default",
        api_version="cilium.io/v2", defaults={
            "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
            "custom-cni-conf": "false", "cni-chaining-mode": "none", "cni-exclusive": "true"}))
    return steps


def shell_pods(sandbox: Sandbox, node: str) -> list[str]:
    return [p["metadata"]["name"] for p in sandbox.kube.get(
        "/api/v1/namespaces/kube-system/pods", labelSelector="cilium-migrate.io/node-shell",
        fieldSelector=f"spec.nodeName={node}")["items"]]


def notes(sandbox: Sandbox, node: str, note: NodeNote) -> int:
    """How many times ``note`` was recorded on the node."""
    return sum(e["reason"] == note.reason and e["message"] == note.message
               for e in sandbox.kube.get("/api/v1/events", fieldSelector=(
                   f"involvedObject.kind=Node,involvedObject.name={node}"))["items"])


def test_a_rollback_script_restores_flannel_and_a_failing_one_says_why(
        sandbox: Sandbox, steps: MigrationActivities) -> None:
    env = ActivityEnvironment()
    target = NodeRef(cluster=CLUSTER, node=sandbox.claim_worker(), migration_id="r")
    env.run(steps.label_node, LabelInput(target=target))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))
    net_d = sandbox.cni_dir(target.node)
    assert sorted(p.name for p in net_d.iterdir()) == ["05-cilium.conflist",
                                                       "10-flannel.conflist.cilium_bak"]
    note = NodeNote(reason="CiliumMigrateRolledBack", message=f"flannel again ({uuid4().hex})")
    rollback = HostCommandInput(target=target, name="rollback", script=ROLLBACK, image=IMAGE,
                                timeout_seconds=30, on_success=note)
    # The agent that read the override watches the directory and puts its config back at once.
    env.run(steps.run_host_command, rollback)
    assert sorted(p.name for p in net_d.iterdir()) == ["05-cilium.conflist",
                                                       "10-flannel.conflist.cilium_bak"]
    # The rollback's order: no label, an agent started without the override, then the script.
    env.run(steps.label_node, LabelInput(target=target, value=None))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))
    env.run(steps.run_host_command, rollback)
    assert sorted(p.name for p in net_d.iterdir()) == ["10-flannel.conflist"]
    assert shell_pods(sandbox, target.node) == []
    assert notes(sandbox, target.node, note) == 2

    # Run again, the same script finds nothing to move: the failure names the missing file.
    with pytest.raises(ApplicationError) as raised:
        env.run(steps.run_host_command, rollback)
    error = raised.value
    assert error.type == StepError.HOST_COMMAND_FAILED and error.non_retryable
    assert "exit 1" in error.message and "10-flannel.conflist.cilium_bak" in error.message
    assert shell_pods(sandbox, target.node) == []
    assert sorted(p.name for p in net_d.iterdir()) == ["10-flannel.conflist"]
    assert notes(sandbox, target.node, note) == 2  # a failed command records nothing

    # Without the label, a restarted agent leaves flannel in place.
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))
    assert sorted(p.name for p in net_d.iterdir()) == ["10-flannel.conflist"]
