"""The fleet workflow on a real Temporal server, its clusters' activities played by the fake
cluster (tests/fakes.py): stages in order, concurrency, soak, stage approval, a failed cluster
halting the fleet until the operator decides, and abort."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)

from plan.fleet import Fleet, FleetStage
from plan.spec import ApprovalSpec
from tests.fakes import FakeCluster
from tests.workflows.support import record_histories, spec
from tests.workflows.support import start as start_cluster
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.fleet import FleetMigrationWorkflow
from workflows.fleet_progress import ClusterState, FleetPhase, FleetProgress, StageState
from workflows.identity import (
    CLUSTER_HALT_SIGNAL,
    FLEET_ATTRIBUTE,
    STAGE_ATTRIBUTE,
    cluster_workflow_id,
    fleet_workflow_id,
)
from workflows.messages import (
    ApproveRequest,
    ClusterDecision,
    DecideRequest,
    Decision,
    FleetDecideRequest,
    FleetInput,
    PauseRequest,
)
from workflows.progress import NodeState, Phase

SOAK = 2.0  # seconds: long enough to see, short enough for a test


@pytest.fixture
def task_queue() -> str:
    return f"fleet-{uuid.uuid4().hex[:8]}"


def fleet(name: str, stages: list[dict[str, Any]], approvers: list[str] | None = None) -> Fleet:
    """A fleet of small clusters that need no approval of their own."""
    clusters = [c for stage in stages for c in stage["clusters"]]
    return Fleet(
        name=name, approvals=ApprovalSpec(approvers=approvers or []),
        clusters=[spec(c, approvals={"policy": "none"}) for c in clusters],
        stages=[FleetStage(index=i, name=stage.get("name", f"stage-{i}"),
                           clusters=stage["clusters"],
                           concurrency=stage.get("concurrency", 1),
                           soak_seconds=stage.get("soak", 0.0),
                           approval=stage.get("approval", False))
                for i, stage in enumerate(stages, start=1)])


async def start(env: Any, migration: Fleet, task_queue: str
                ) -> WorkflowHandle[Any, FleetProgress]:
    return await env.client.start_workflow(
        FleetMigrationWorkflow.run, FleetInput(fleet=migration),
        id=fleet_workflow_id(migration.name), task_queue=task_queue)


async def until(handle: WorkflowHandle[Any, FleetProgress], check: Any, what: str,
                attempts: int = 1200) -> FleetProgress:
    for _ in range(attempts):
        current = await handle.query(FleetMigrationWorkflow.get_progress)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fleet never reached: {what}; last: {current.model_dump_json()}")


async def test_stages_run_in_order_one_at_a_time_with_soak_and_approval(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    dev, staging, prod = (f"{n}-{suffix}" for n in ("dev", "staging", "prod"))
    rollout = fleet(f"staged-{suffix}", [
        {"name": "dev", "clusters": [dev], "soak": SOAK},
        {"name": "prod", "clusters": [staging, prod], "approval": True}], approvers=["alice"])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        waiting = await until(handle, lambda p: p.pending_gates == ["stage-2"], "stage-2's gate")
        assert fake.discovered == [dev]  # nothing of stage 2 before its approval
        assert [s.state for s in waiting.stages] == [StageState.DONE,
                                                     StageState.WAITING_APPROVAL]
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(FleetMigrationWorkflow.approve, ApproveRequest(
                gate="stage-2", approver="mallory"))
        assert "'mallory' may not approve" in str(refused.value.cause)
        await handle.execute_update(FleetMigrationWorkflow.approve, ApproveRequest(
            gate="stage-2", approver="alice", reason="dev soaked"))
        report = await handle.result()
        await record_histories(temporal_env.client, handle.id)
        # Each cluster is an ordinary migration under its usual ID: per-cluster commands
        # (here its progress query) reach it directly.
        child = temporal_env.client.get_workflow_handle_for(
            ClusterMigrationWorkflow.run, cluster_workflow_id(staging))
        child_progress = await child.query(ClusterMigrationWorkflow.get_progress)
        child_attributes = (await child.describe()).typed_search_attributes

    assert report.phase is FleetPhase.COMPLETED
    assert fake.discovered == [dev, staging, prod]
    clusters = report.clusters
    assert {c.name: c.state for c in clusters.values()} == dict.fromkeys(
        (dev, staging, prod), ClusterState.COMPLETED)
    assert child_progress.phase is Phase.COMPLETED
    assert child_attributes.get(FLEET_ATTRIBUTE) == rollout.name
    assert child_attributes.get(STAGE_ATTRIBUTE) == "prod"
    # The soak: stage 1 ended SOAK seconds after its last cluster, and stage 2 began after it.
    first, second = report.stages
    assert first.soak_ends_at is not None and first.finished_at is not None
    assert first.finished_at - clusters[dev].finished_at >= timedelta(seconds=SOAK)  # type: ignore[operator]
    assert second.started_at is not None and second.started_at >= first.finished_at
    # Concurrency 1: prod started once staging had ended.
    assert clusters[prod].started_at >= clusters[staging].finished_at  # type: ignore[operator]
    assert [(a.gate, a.approver) for a in report.approvals] == [("stage-2", "alice")]


async def test_a_failed_cluster_halts_the_fleet_until_the_operator_retries_it(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    dev, staging, prod = (f"{n}-{suffix}" for n in ("dev", "staging", "prod"))
    fake.unreachable.add(staging)
    rollout = fleet(f"retry-{suffix}", [{"clusters": [dev]}, {"clusters": [staging]},
                                        {"clusters": [prod]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        halted = await until(handle, lambda p: p.halted is not None, "the halt")
        assert halted.clusters[staging].state is ClusterState.FAILED
        assert "connection refused" in (halted.clusters[staging].error or "")
        assert f"cluster {staging} failed" in halted.halted  # type: ignore[operator]
        await asyncio.sleep(1.0)  # time enough for stage 3 to start, were it to
        held = await handle.query(FleetMigrationWorkflow.get_progress)
        assert held.clusters[prod].state is ClusterState.PENDING
        assert held.stages[2].state is StageState.PENDING and prod not in fake.discovered
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
                cluster=prod, decision=ClusterDecision.RETRY))
        assert "pending, not waiting for a decision" in str(refused.value.cause)

        fake.unreachable.clear()  # the operator fixed what failed
        await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
            cluster=staging, decision=ClusterDecision.RETRY, operator="alice"))
        report = await handle.result()
        await record_histories(temporal_env.client, handle.id)

    assert report.phase is FleetPhase.COMPLETED and report.halted is None
    assert fake.discovered == [dev, staging, staging, prod]
    assert report.clusters[staging].attempts == 2
    assert {c.state for c in report.clusters.values()} == {ClusterState.COMPLETED}


async def test_abort_cancels_the_running_clusters_which_uncordon_what_they_cordoned(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.hold_drain = asyncio.Event()  # every drain goes on until it is cancelled
    suffix = task_queue.removeprefix("fleet-")
    east, west, later = (f"{n}-{suffix}" for n in ("east", "west", "later"))
    rollout = fleet(f"abort-{suffix}", [{"clusters": [east, west], "concurrency": 2},
                                        {"clusters": [later]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        for _ in range(1200):  # both clusters' canaries are draining at once
            if fake.calls[("drain", "worker-1")] >= 2:
                break
            await asyncio.sleep(0.05)
        assert fake.cordoned == {"worker-1"}
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await handle.query(FleetMigrationWorkflow.get_progress)
        statuses = [(await temporal_env.client.get_workflow_handle(
            cluster_workflow_id(name)).describe()).status for name in (east, west)]

    assert final.phase is FleetPhase.CANCELLED
    assert statuses == [WorkflowExecutionStatus.CANCELED] * 2
    assert {final.clusters[c].state for c in (east, west)} == {ClusterState.CANCELLED}
    assert final.clusters[later].state is ClusterState.PENDING and later not in fake.discovered
    assert not fake.cordoned  # each cluster's own abort uncordoned its canary
    assert [s.state for s in final.stages] == [StageState.CANCELLED, StageState.PENDING]


async def test_pause_holds_the_next_stage_and_a_skipped_or_aborted_cluster_needs_a_decision(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    first, second, third = (f"{n}-{suffix}" for n in ("first", "second", "third"))
    fake.unreachable.add(first)
    rollout = fleet(f"steer-{suffix}", [{"clusters": [first]}, {"clusters": [second]},
                                        {"clusters": [third]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        await until(handle, lambda p: p.clusters[first].waiting_for_decision, "the halt")
        await handle.execute_update(FleetMigrationWorkflow.pause, PauseRequest())
        await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
            cluster=first, decision=ClusterDecision.SKIP))
        await until(handle, lambda p: p.stages[0].state is StageState.DONE, "stage 1's end")
        await asyncio.sleep(1.0)  # time enough for stage 2 to start, were it to
        assert second not in fake.discovered  # the pause holds it

        fake.hold_drain = asyncio.Event()
        await handle.execute_update(FleetMigrationWorkflow.resume, PauseRequest())
        for _ in range(1200):
            if fake.hold_drain.is_set():
                break
            await asyncio.sleep(0.05)
        # The operator aborts the second cluster by itself, as `cilium-migrate abort` does.
        await temporal_env.client.get_workflow_handle(cluster_workflow_id(second)).cancel()
        halted = await until(handle, lambda p: p.clusters[second].waiting_for_decision,
                             "the halt after the cluster's abort")
        assert halted.clusters[second].state is ClusterState.CANCELLED
        assert halted.halted is not None and "its migration was aborted" in halted.halted
        assert not fake.cordoned  # the cluster's own abort compensated

        fake.hold_drain = None
        await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
            cluster=second, decision=ClusterDecision.RETRY))
        report = await handle.result()

    assert report.phase is FleetPhase.COMPLETED
    assert {name: (c.state, c.attempts) for name, c in report.clusters.items()} == {
        first: (ClusterState.SKIPPED, 1), second: (ClusterState.COMPLETED, 2),
        third: (ClusterState.COMPLETED, 1)}
    assert fake.discovered == [first, second, second, third]


async def test_a_cluster_that_degrades_while_soaking_halts_the_fleet_and_the_soak_restarts(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    canary, rest = f"canary-{suffix}", f"rest-{suffix}"
    rollout = fleet(f"soak-{suffix}", [{"clusters": [canary], "soak": SOAK},
                                       {"clusters": [rest]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        await until(handle, lambda p: p.stages[0].state is StageState.SOAKING, "the soak")
        fake.degraded[canary] = "node worker-1 is not Ready"
        halted = await until(handle, lambda p: p.halted is not None, "the soak's halt")
        assert halted.stages[0].soak_problems == [f"cluster {canary}: node worker-1 is not Ready"]
        assert "degraded while soaking" in halted.halted  # type: ignore[operator]
        await asyncio.sleep(1.0)
        assert rest not in fake.discovered  # the next stage waits

        fake.degraded.clear()  # the operator mended the canary
        await handle.execute_update(FleetMigrationWorkflow.resume, PauseRequest())
        report = await handle.result()
        await record_histories(temporal_env.client, handle.id)

    assert report.phase is FleetPhase.COMPLETED and report.halted is None
    first = report.stages[0]
    assert first.soak_checks == 2 and first.soak_problems == []  # a whole soak after the fix
    assert fake.discovered == [canary, rest]


async def test_abort_during_a_soak_health_check_ends_the_fleet(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    canary, rest = f"canary-{suffix}", f"rest-{suffix}"
    rollout = fleet(f"soak-abort-{suffix}", [{"clusters": [canary], "soak": SOAK},
                                             {"clusters": [rest]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        await until(handle, lambda p: p.stages[0].state is StageState.SOAKING, "the soak")
        fake.hold_health = asyncio.Event()  # the soak's check hangs until it is cancelled
        for _ in range(1200):
            if fake.hold_health.is_set():
                break
            await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await handle.query(FleetMigrationWorkflow.get_progress)

    assert final.phase is FleetPhase.CANCELLED
    assert [s.state for s in final.stages] == [StageState.CANCELLED, StageState.PENDING]
    assert final.clusters[canary].state is ClusterState.COMPLETED
    assert rest not in fake.discovered


async def test_a_cluster_already_migrating_by_hand_halts_the_fleet_until_retried(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    suffix = task_queue.removeprefix("fleet-")
    busy = f"busy-{suffix}"
    by_hand = await start_cluster(temporal_env, fake, spec(busy, approvals={
        "policy": "per-phase"}), task_queue)  # waits at its install gate
    rollout = fleet(f"busy-{suffix}", [{"clusters": [busy]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        halted = await until(handle, lambda p: p.clusters[busy].waiting_for_decision, "a halt")
        assert "already running outside the fleet" in (halted.clusters[busy].error or "")
        await by_hand.cancel()
        with pytest.raises(WorkflowFailureError):
            await by_hand.result()
        await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
            cluster=busy, decision=ClusterDecision.RETRY))
        report = await handle.result()

    assert report.clusters[busy].state is ClusterState.COMPLETED
    assert report.clusters[busy].attempts == 2


async def test_a_cluster_halted_by_a_rolled_back_node_holds_the_fleet_until_it_goes_on(
        temporal_env: Any, task_queue: str) -> None:
    """A blocked node, then the rolled-back node, halt their cluster without failing it; the
    fleet hears of each from the cluster and starts nothing new until the operator has mended
    that cluster with its own commands."""
    fake = FakeCluster(workers=2)
    fake.verify_fails.add("worker-1")  # the canary's Cilium checks fail until fixed
    suffix = task_queue.removeprefix("fleet-")
    first, second = (f"{n}-{suffix}" for n in ("first", "second"))
    rollout = fleet(f"rolled-{suffix}", [{"clusters": [first]}, {"clusters": [second]}])
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, rollout, task_queue)
        await until(handle, lambda p: p.clusters[first].run_id is not None, "the first start")
        cluster = temporal_env.client.get_workflow_handle_for(
            ClusterMigrationWorkflow.run, cluster_workflow_id(first))
        for _ in range(1200):
            nodes = await _cluster_nodes(cluster)
            if nodes.get("worker-1") is NodeState.BLOCKED:
                break
            await asyncio.sleep(0.05)
        assert await _cluster_nodes(cluster) == {"worker-1": NodeState.BLOCKED,
                                                 "worker-2": NodeState.PENDING,
                                                 "cp-1": NodeState.PENDING}
        # A node waiting for the operator holds the fleet already.
        blocked = await until(handle, lambda p: p.halted is not None, "the fleet's halt")
        assert "node worker-1 waits for `decide`" in (blocked.clusters[first].halted or "")
        assert blocked.stages[1].state is StageState.PENDING and second not in fake.discovered
        await cluster.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
            node="worker-1", decision=Decision.ROLLBACK, operator="alice"))

        halted = await until(handle, lambda p: "rolled-back" in (p.halted or ""),
                             "the halt after the rollback")
        assert halted.clusters[first].state is ClusterState.RUNNING
        assert "worker-1 was rolled-back" in (halted.clusters[first].halted or "")
        assert f"cluster {first} halted: node worker-1" in halted.halted  # type: ignore[operator]
        assert halted.stages[1].state is StageState.PENDING and second not in fake.discovered
        with pytest.raises(WorkflowUpdateFailedError):  # not failed: the cluster's to mend
            await handle.execute_update(FleetMigrationWorkflow.decide, FleetDecideRequest(
                cluster=first, decision=ClusterDecision.SKIP))

        # The operator goes on with the cluster's next wave; finalize then waits for the
        # rolled-back node, which halts the cluster (and so the fleet) again.
        fake.verify_fails.clear()
        await cluster.execute_update(ClusterMigrationWorkflow.resume, PauseRequest())
        again = await until(handle, lambda p: "finalize waits" in (p.halted or ""),
                            "the halt before finalize")
        assert second not in fake.discovered and again.stages[1].state is StageState.PENDING
        await cluster.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
            node="worker-1", decision=Decision.RETRY, operator="alice"))
        report = await handle.result()
        await record_histories(temporal_env.client, handle.id)
        await record_histories(temporal_env.client, cluster.id)
        told = [json.loads(event.workflow_execution_signaled_event_attributes.input.payloads[0]
                           .data)["halted"]
                for event in (await handle.fetch_history()).events
                if event.workflow_execution_signaled_event_attributes.signal_name
                == CLUSTER_HALT_SIGNAL]

    assert report.phase is FleetPhase.COMPLETED and report.halted is None
    assert report.clusters[first].halted is None
    # What the cluster told the fleet, in order: never clear between the block and the
    # rolled-back halt (a gap would let the fleet start a cluster meanwhile).
    assert [_gist(halt) for halt in told] == ["blocked", "rolling back", "rolled back", None,
                                              "finalize", None]
    assert {c.state for c in report.clusters.values()} == {ClusterState.COMPLETED}
    assert fake.discovered == [first, second]


async def _cluster_nodes(cluster: WorkflowHandle[Any, Any]) -> dict[str, NodeState]:
    progress = await cluster.query(ClusterMigrationWorkflow.get_progress)
    return {name: node.state for name, node in progress.nodes.items()}


def _gist(halt: str | None) -> str | None:
    if halt is None:
        return None
    for marker, gist in (("waits for `decide`", "blocked"), ("under the rollback", "rolling back"),
                         ("was rolled-back", "rolled back"), ("finalize waits", "finalize")):
        if marker in halt:
            return gist
    return halt
