"""A node's switch to Cilium through the activities: label and agent restart, a reboot through
a node-shell pod that happens once, and the probe that verifies the result."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import (
    PROBE_LABEL,
    AgentStatus,
    EchoMeshInput,
    EchoMeshRemoval,
    HostCommandInput,
    LabelInput,
    NodeConfigInput,
    NodeRef,
    RebootInput,
    RestartAgentInput,
    SnapshotInput,
    StepError,
    VerifyInput,
)
from plan.policies import ClusterRef, ConnectivityPolicy, Overlays, RebootPolicy, VerifyPolicy
from plan.spec import DEFAULT_ECHO_IMAGE, DEFAULT_IMAGE, VerifyCheck
from sandbox.simulator.faults import Fault, read_faults, write_faults
from tests.conftest import CILIUM_POOL, Sandbox

pytestmark = pytest.mark.sandbox

CLUSTER = ClusterRef(name="sandbox")
IMAGE = DEFAULT_IMAGE
FLANNEL_NETWORK = "10.244.0.0/16"
NODE_CONFIG = NodeConfigInput(cluster=CLUSTER, namespace="kube-system", name="cilium-default",
                              api_version="cilium.io/v2", defaults={
    "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
    "custom-cni-conf": "false",
    "cni-chaining-mode": "none",
    "cni-exclusive": "true",
})
CHECKS: list[VerifyCheck] = ["pod-ip-in-pool", "api-server", "dns", "peer-flannel",
                             "peer-cilium"]
ROLLBACK = ("rm -f /etc/cni/net.d/05-cilium.conflist && mv /etc/cni/net.d/10-flannel.conflist"
            ".cilium_bak /etc/cni/net.d/10-flannel.conflist")


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox, cilium: None) -> MigrationActivities:
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))
    ActivityEnvironment().run(steps.apply_node_config, NODE_CONFIG)
    return steps


@pytest.fixture(scope="module")
def switched(sandbox: Sandbox, steps: MigrationActivities
             ) -> Iterator[tuple[NodeRef, RestartAgentInput, AgentStatus]]:
    """A worker moved to Cilium the way the node workflow does it: label, then agent restart.
    Afterwards it goes back to flannel, so later tests in the session find new pods there
    on flannel as before."""
    target = NodeRef(cluster=CLUSTER, node=sandbox.claim_worker(), migration_id="r")
    env = ActivityEnvironment()
    env.run(steps.label_node, LabelInput(target=target))
    restart = RestartAgentInput(target=target, namespace="kube-system", timeout_seconds=30,
                                not_before=datetime.now(UTC))
    yield target, restart, env.run(steps.restart_agent, restart)
    env.run(steps.label_node, LabelInput(target=target, value=None))
    env.run(steps.run_host_command, HostCommandInput(target=target, name="rollback",
                                                     script=ROLLBACK, image=IMAGE))
    env.run(steps.restart_agent, restart.model_copy(update={"not_before": datetime.now(UTC)}))


@pytest.fixture
def probe_fails(sandbox: Sandbox) -> Iterator[Any]:
    path = sandbox.state_dir / "faults.yaml"
    nodes: list[str] = []

    def inject(node: str) -> None:
        faults = read_faults(path)
        faults.setdefault(node, set()).add(Fault.PROBE_FAILS)
        write_faults(path, faults)
        nodes.append(node)

    yield inject
    faults = read_faults(path)
    for node in nodes:
        faults.get(node, set()).discard(Fault.PROBE_FAILS)
    write_faults(path, faults)


def agent_pods(sandbox: Sandbox, node: str) -> list[dict[str, Any]]:
    return [p for p in sandbox.kube.get(
        "/api/v1/namespaces/kube-system/pods", labelSelector="k8s-app=cilium",
        fieldSelector=f"spec.nodeName={node}")["items"]
        if not p["metadata"].get("deletionTimestamp")]


def test_label_and_agent_restart_switch_the_node_and_a_retry_restarts_nothing(
        sandbox: Sandbox, steps: MigrationActivities,
        switched: tuple[NodeRef, RestartAgentInput, AgentStatus]) -> None:
    target, restart, agent = switched
    assert agent.ready
    # The new agent's own times, as the API server has them: created after the step began
    # (whole seconds), Ready after that.
    assert agent.created_at and agent.ready_at
    assert restart.not_before.replace(microsecond=0) <= agent.created_at <= agent.ready_at
    assert sorted(p.name for p in sandbox.cni_dir(target.node).iterdir()) == [
        "05-cilium.conflist", "10-flannel.conflist.cilium_bak"]
    # The step retried: the agent it started already read the overrides, so it stays.
    again = ActivityEnvironment().run(steps.restart_agent, restart)
    assert again.pod == agent.pod
    assert [p["metadata"]["name"] for p in agent_pods(sandbox, target.node)] == [agent.pod]


def test_a_node_shell_reboot_happens_once_for_a_boot_id(
        sandbox: Sandbox, steps: MigrationActivities,
        switched: tuple[NodeRef, RestartAgentInput, AgentStatus]) -> None:
    target = switched[0]
    env = ActivityEnvironment()
    policy = RebootPolicy(strategy="node-shell", timeout_seconds=30, image=IMAGE)
    snapshot = env.run(steps.snapshot_node, SnapshotInput(target=target, reboot=policy))
    before = snapshot.boot_id
    assert snapshot.boot_witness == before  # a machine's reboot shows in its bootID
    request = RebootInput(target=target, before=snapshot, cilium_namespace="kube-system",
                          policy=policy)

    first = env.run(steps.reboot_node, request)
    assert first.triggered and first.boot_id_after != before
    assert first.boot_witness_after == first.boot_id_after
    node = sandbox.kube.get(f"/api/v1/nodes/{target.node}")
    assert node["status"]["nodeInfo"]["bootID"] == first.boot_id_after
    [agent] = agent_pods(sandbox, target.node)
    assert agent["status"]["containerStatuses"][0]["restartCount"] >= 1  # restarted by the boot

    second = env.run(steps.reboot_node, request)  # the same step once more
    assert (second.triggered, second.boot_id_after) == (False, first.boot_id_after)
    shells = sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                              labelSelector="cilium-migrate.io/node-shell",
                              fieldSelector=f"spec.nodeName={target.node}")["items"]
    assert shells == []
    node = sandbox.kube.get(f"/api/v1/nodes/{target.node}")
    assert node["status"]["nodeInfo"]["bootID"] == first.boot_id_after


def test_verify_passes_on_a_switched_node_and_fails_when_the_probe_reaches_nothing(
        sandbox: Sandbox, steps: MigrationActivities, probe_fails: Any, namespace: str,
        switched: tuple[NodeRef, RestartAgentInput, AgentStatus]) -> None:
    target = switched[0]
    env = ActivityEnvironment()
    # The echo mesh the run deploys: its pods on flannel nodes are the flannel peers; the
    # switched node is the only one on Cilium, so there is no Cilium peer to call yet.
    mesh = ConnectivityPolicy(namespace=f"echo-{namespace}", image=DEFAULT_ECHO_IMAGE,
                              max_failed_requests=0, window_seconds=60, interval_seconds=5,
                              sample_pairs=4)
    deployed = env.run(steps.deploy_echo_mesh, EchoMeshInput(
        cluster=CLUSTER, migration_id="r", policy=mesh, timeout_seconds=120))
    assert deployed.desired > 1 and deployed.ready == deployed.desired
    request = VerifyInput(
        target=target, policy=VerifyPolicy(image=IMAGE, checks=CHECKS, timeout_seconds=30,
                                           echo_namespace=mesh.namespace),
        overlays=Overlays(cilium_namespace="kube-system", cilium_pools=[CILIUM_POOL],
                          flannel_network=FLANNEL_NETWORK))
    try:
        _verify_then_break(sandbox, env, steps, request, probe_fails)
    finally:
        assert env.run(steps.remove_echo_mesh, EchoMeshRemoval(
            cluster=CLUSTER, migration_id="r", namespace=mesh.namespace))


def _verify_then_break(sandbox: Sandbox, env: ActivityEnvironment, steps: MigrationActivities,
                       request: VerifyInput, probe_fails: Any) -> None:
    target = request.target
    result = env.run(steps.verify_node, request)
    assert result.passed
    assert result.pod_ip and ipaddress.ip_address(result.pod_ip) in ipaddress.ip_network(
        CILIUM_POOL)
    checks = {c.name: c for c in result.checks}
    assert checks["peer-flannel"].detail.startswith("http://10.244.")
    assert checks["peer-flannel"].detail.endswith(" answered")
    assert (checks["peer-cilium"].outcome, checks["peer-cilium"].detail) == (
        "not-checked", "no Ready echo pod on cilium nodes yet")
    assert checks["dns"].detail == "kubernetes.default.svc.cluster.local resolved to 10.96.0.1"
    assert list(checks) == CHECKS

    probe_fails(target.node)
    with pytest.raises(ApplicationError) as raised:
        env.run(steps.verify_node, request)
    error = raised.value
    assert error.type == StepError.VERIFICATION_FAILED and error.non_retryable
    failed = {c["name"] for c in error.details[0]["checks"] if c["outcome"] == "failed"}
    assert {"api-server", "dns", "peer-flannel"} <= failed and "pod-ip-in-pool" not in failed
    assert "api-server" in error.message
    assert sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                            labelSelector=f"{PROBE_LABEL}=true")["items"] == []
