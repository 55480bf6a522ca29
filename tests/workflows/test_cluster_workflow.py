"""The migration workflows on a real Temporal server, with activities replaced at the activity
boundary (same names) by a small in-memory cluster. Fast, and precise about orchestration:
gates, decisions, pause, abort and the rejected Updates."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from plan.facts import ClusterFacts, FlannelFacts, NodeFacts
from plan.spec import MigrationSpec
from plan.steps import (
    Activity,
    AgentStatus,
    CiliumStatus,
    CiliumWaitInput,
    ClusterRef,
    CordonResult,
    DrainInput,
    DrainResult,
    HealthInput,
    HealthReport,
    HelmInput,
    HelmResult,
    HostCommandInput,
    LabelInput,
    NodeConfigInput,
    NodeRef,
    NodeSnapshot,
    RebootInput,
    RebootResult,
    RecycleInput,
    RecycleResult,
    RemoveFlannelInput,
    RemoveFlannelResult,
    RestartAgentInput,
    RolloutRestartInput,
    StepError,
    VerifyInput,
    VerifyResult,
)
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow, workflow_id
from workflows.messages import ApproveRequest, DecideRequest, Decision, MigrationInput
from workflows.progress import NodeState, Phase, Progress


class FakeCluster:
    """What the fake activities do to the world, for the test to check."""

    def __init__(self, workers: int = 4) -> None:
        self.nodes = ["cp-1", *(f"worker-{i}" for i in range(1, workers + 1))]
        self.boot = dict.fromkeys(self.nodes, 0)
        self.cordoned: set[str] = set()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.drain_blocked: set[str] = set()
        self.verify_fails: set[str] = set()
        self.hold_drain: asyncio.Event | None = None
        self.helm_values: list[dict[str, Any]] = []

    def facts(self) -> ClusterFacts:
        return ClusterFacts(
            nodes=[NodeFacts(name=n, control_plane=n.startswith("cp"), zone="zone-a",
                             boot_id=f"{n}-boot-0", pod_cidrs=[f"10.244.{i}.0/24"],
                             internal_ip=f"127.1.0.{i + 2}")
                   for i, n in enumerate(self.nodes)],
            flannel=FlannelFacts(namespace="kube-flannel", daemonset="kube-flannel-ds",
                                 network="10.244.0.0/16"),
            service_cidrs=["10.96.0.0/12"], api_server_host="127.0.0.1", api_server_port=6443)

    def activities(self) -> list[Any]:
        cluster = self

        def record(name: str, argument: Any) -> str:
            target = getattr(argument, "target", argument)
            node = str(target.node) if isinstance(target, NodeRef) else "-"
            cluster.calls[(name, node)] += 1
            return node

        @activity.defn(name=Activity.DISCOVER)
        async def discover(ref: ClusterRef) -> ClusterFacts:
            return cluster.facts()

        @activity.defn(name=Activity.HELM_UPGRADE)
        async def helm(input: HelmInput) -> HelmResult:
            cluster.helm_values.append(input.values)
            return HelmResult(revision=len(cluster.helm_values))

        @activity.defn(name=Activity.WAIT_FOR_CILIUM)
        async def wait_cilium(input: CiliumWaitInput) -> CiliumStatus:
            return CiliumStatus(agents_desired=5, agents_ready=5, operator_ready=True)

        @activity.defn(name=Activity.APPLY_NODE_CONFIG)
        async def apply_config(input: NodeConfigInput) -> None:
            record("apply-config", input)

        @activity.defn(name=Activity.DELETE_NODE_CONFIG)
        async def delete_config(input: NodeConfigInput) -> None:
            record("delete-config", input)

        @activity.defn(name=Activity.SNAPSHOT_NODE)
        async def snapshot(ref: NodeRef) -> NodeSnapshot:
            node = record("snapshot", ref)
            return NodeSnapshot(node=node, unschedulable=node in cluster.cordoned,
                                boot_id=f"{node}-boot-{cluster.boot[node]}", ready=True)

        @activity.defn(name=Activity.CORDON_NODE)
        async def cordon(ref: NodeRef) -> CordonResult:
            node = record("cordon", ref)
            cluster.cordoned.add(node)
            return CordonResult(cordoned_by_us=True)

        @activity.defn(name=Activity.DRAIN_NODE)
        async def drain(input: DrainInput) -> DrainResult:
            node = record("drain", input)
            if cluster.hold_drain is not None:
                cluster.hold_drain.set()
                while True:  # a drain that takes long; only a cancellation ends it
                    await asyncio.sleep(0.2)
                    activity.heartbeat()
            if node in cluster.drain_blocked:
                raise ApplicationError(
                    f"pod t/db-0 blocked by PDB t/db-pdb on {node}",
                    [{"pod": "t/db-0", "reason": "needs 1 healthy, has 1", "pdb": "t/db-pdb"}],
                    type=StepError.DRAIN_BLOCKED, non_retryable=True)
            return DrainResult(evicted=[f"t/web-{node}"])

        @activity.defn(name=Activity.LABEL_NODE)
        async def label(input: LabelInput) -> None:
            record("label" if input.value else "unlabel", input)

        @activity.defn(name=Activity.RESTART_AGENT)
        async def restart_agent(input: RestartAgentInput) -> AgentStatus:
            record("restart-agent", input)
            return AgentStatus(pod="cilium-x", ready=True)

        @activity.defn(name=Activity.REBOOT_NODE)
        async def reboot(input: RebootInput) -> RebootResult:
            node = record("reboot", input)
            if input.boot_id_before == f"{node}-boot-{cluster.boot[node]}":
                cluster.boot[node] += 1
            return RebootResult(boot_id_after=f"{node}-boot-{cluster.boot[node]}",
                                triggered=True)

        @activity.defn(name=Activity.RUN_HOST_COMMAND)
        async def host_command(input: HostCommandInput) -> None:
            record(f"host:{input.name}", input)

        @activity.defn(name=Activity.VERIFY_NODE)
        async def verify(input: VerifyInput) -> VerifyResult:
            node = record(f"verify-{input.expect}", input)
            if node in cluster.verify_fails and input.expect == "cilium":
                raise ApplicationError(
                    "probe on worker failed: api-server", {"pod_ip": "10.245.1.9", "checks": [
                        {"name": "api-server", "passed": False, "detail": "unreachable"}]},
                    type=StepError.VERIFICATION_FAILED, non_retryable=True)
            return VerifyResult(pod_ip="10.245.1.9", checks=[])

        @activity.defn(name=Activity.UNCORDON_NODE)
        async def uncordon(ref: NodeRef) -> bool:
            node = record("uncordon", ref)
            cluster.cordoned.discard(node)
            return True

        @activity.defn(name=Activity.CHECK_HEALTH)
        async def health(input: HealthInput) -> HealthReport:
            return HealthReport(nodes_on_cilium=1, pods_on_cilium=1, pods_total=1,
                                flannel_ready=True)

        @activity.defn(name=Activity.RECYCLE_PODS)
        async def recycle(input: RecycleInput) -> RecycleResult:
            return RecycleResult(recycled=[])

        @activity.defn(name=Activity.ROLLOUT_RESTART)
        async def rollout(input: RolloutRestartInput) -> None:
            record("rollout-restart", input)

        @activity.defn(name=Activity.REMOVE_FLANNEL)
        async def remove_flannel(input: RemoveFlannelInput) -> RemoveFlannelResult:
            record("remove-flannel", input)
            return RemoveFlannelResult(deleted=["kube-flannel/kube-flannel-ds"])

        return [discover, helm, wait_cilium, apply_config, delete_config, snapshot, cordon,
                drain, label, restart_agent, reboot, host_command, verify, uncordon, health,
                recycle, rollout, remove_flannel]


def spec(name: str, **sections: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": name}, **sections})


async def start(env: Any, fake: FakeCluster, migration: MigrationSpec, task_queue: str
                ) -> WorkflowHandle[Any, Progress]:
    return await env.client.start_workflow(
        ClusterMigrationWorkflow.run, MigrationInput(spec=migration),
        id=workflow_id(migration.cluster.name), task_queue=task_queue)


async def progress(handle: WorkflowHandle[Any, Progress]) -> Progress:
    return await handle.query(ClusterMigrationWorkflow.get_progress)


async def until(handle: WorkflowHandle[Any, Progress], check: Any, what: str,
                attempts: int = 600) -> Progress:
    """Queries until ``check(progress)``; the workflow's own state is the clock here."""
    for _ in range(attempts):
        current = await progress(handle)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"workflow never reached: {what}; last: {current.model_dump_json()}")


async def history_length(handle: WorkflowHandle[Any, Any]) -> int:
    return len((await handle.fetch_history()).events)


@pytest.fixture
def task_queue() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}"


async def approve_all(handle: WorkflowHandle[Any, Progress], approver: str = "alice") -> Progress:
    """Approves each gate as it opens, until the run ends; returns the final progress."""
    while True:
        current = await progress(handle)
        if current.phase in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED):
            return current
        for gate in current.pending_gates:
            await handle.execute_update(ClusterMigrationWorkflow.approve, ApproveRequest(
                gate=gate, approver=approver, reason=f"checked {gate}"))
        await asyncio.sleep(0.05)


async def test_per_wave_approvals_migrate_every_node_once(temporal_env: Any,
                                                          task_queue: str) -> None:
    fake = FakeCluster(workers=4)
    migration = spec(f"happy-{task_queue}", approvals={"policy": "per-wave",
                                                       "approvers": ["alice"]},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await approve_all(handle)
        report = await handle.result()

    assert report.phase is Phase.COMPLETED
    assert {n: s.state for n, s in report.nodes.items()} == dict.fromkeys(fake.nodes,
                                                                          NodeState.MIGRATED)
    assert fake.boot == dict.fromkeys(fake.nodes, 1)  # every node rebooted exactly once
    assert not fake.cordoned
    assert [w.nodes for w in report.waves][-1] == ["cp-1"]  # control plane last
    gates = [a.gate for a in report.approvals]
    assert gates == ["install", *(f"wave-{w.index}" for w in report.waves), "finalize",
                     "remove-flannel"]
    assert all(a.approver == "alice" and a.at for a in report.approvals)
    assert fake.helm_values[0]["tunnelPort"] == 8473
    assert fake.helm_values[1]["cni"]["customConf"] is False
    assert ("cni.customConf", True, False) in [tuple(d) for d in report.values_diff]
    assert fake.calls[("remove-flannel", "-")] == 1


async def test_rejected_updates_leave_no_history(temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    migration = spec(f"reject-{task_queue}", approvals={"policy": "per-wave",
                                                        "approvers": ["alice"]})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.pending_gates == ["install"], "the install gate")
        before = await history_length(handle)
        rejected = [
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="wave-1", approver="alice"),
             "not pending yet"),
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="install", approver="mallory"),
             "may not approve"),
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="nonsense", approver="alice"),
             "no gate 'nonsense'"),
            (ClusterMigrationWorkflow.decide, DecideRequest(node="worker-9",
                                                            decision=Decision.RETRY),
             "no node 'worker-9'"),
            (ClusterMigrationWorkflow.decide, DecideRequest(node="worker-1",
                                                            decision=Decision.RETRY),
             "not waiting for a decision"),
        ]
        for update, request, message in rejected:
            with pytest.raises(WorkflowUpdateFailedError) as error:
                await handle.execute_update(update, request)
            assert message in str(error.value.cause)
        assert await history_length(handle) == before
        await handle.cancel()


async def test_a_blocked_drain_waits_for_a_decision_then_retries(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.drain_blocked.add("worker-1")
    migration = spec(f"blocked-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked node")
        node = blocked.nodes["worker-1"]
        assert node.blockers[0].pod == "t/db-0" and node.blockers[0].pdb == "t/db-pdb"
        assert "node worker-1: drain: pod t/db-0 blocked by PDB t/db-pdb" in " ".join(
            blocked.blockers)
        fake.drain_blocked.clear()
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-1", decision=Decision.RETRY))
        report = await handle.result()
    assert report.nodes["worker-1"].state is NodeState.MIGRATED
    assert fake.calls[("drain", "worker-1")] == 2


async def test_failed_verification_halts_and_rollback_returns_the_node(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=3)
    fake.verify_fails.add("worker-2")
    migration = spec(f"rollback-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-2"].state is NodeState.BLOCKED, "verify failure")
        assert blocked.nodes["worker-2"].verify[0].name == "api-server"
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-2", decision=Decision.ROLLBACK))
        halted = await until(handle, lambda p: p.halted is not None, "the halt")
        assert "worker-2 was rolled-back" in halted.halted
        assert halted.nodes["worker-2"].state is NodeState.ROLLED_BACK
        later = [w for w in halted.waves if w.state == "pending"]
        assert later and all(halted.nodes[n].state is NodeState.PENDING
                             for w in later for n in w.nodes)
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        report = await handle.result()
    assert fake.calls[("unlabel", "worker-2")] == 1
    assert fake.calls[("host:rollback", "worker-2")] == 1
    assert fake.calls[("verify-flannel", "worker-2")] == 1
    assert "worker-2" not in fake.cordoned
    assert report.phase is Phase.COMPLETED


async def test_abort_mid_wave_uncordons_what_this_run_cordoned(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=3)
    fake.hold_drain = asyncio.Event()
    migration = spec(f"abort-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await asyncio.wait_for(fake.hold_drain.wait(), timeout=60)
        assert fake.cordoned  # the canary is cordoned and draining
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)
    assert not fake.cordoned
    assert final.phase is Phase.CANCELLED
    assert any(n.state is NodeState.CANCELLED for n in final.nodes.values())
