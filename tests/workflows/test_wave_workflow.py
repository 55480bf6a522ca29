"""A wave's nodes run in a WaveMigration child of the cluster (workflows/wave.py): what the
cluster learns from it when a node's workflow fails and when the operator aborts mid-wave.
Decisions for a wave's blocked node (test_cluster_workflow.py) reach it the same way."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from tests.fakes import FakeCluster
from tests.workflows.support import (
    progress,
    record_histories,
    spec,
    start,
    start_with,
    until,
)
from worker.build import build_worker
from workflows.identity import WAVE_WORKFLOW, node_workflow_id, wave_workflow_id
from workflows.progress import NodeState, Phase

# Only a guard against a wave that never gets all its nodes running (it would wait forever);
# a wave that does finishes in seconds.
DEADLOCK_SECONDS = 120.0


@pytest.fixture
def task_queue() -> str:
    return f"wave-{uuid.uuid4().hex[:8]}"


async def test_a_wave_of_sixty_nodes_runs_its_steps_side_by_side_on_one_default_worker(
        temporal_env: Any, task_queue: str) -> None:
    """Each node of a wave holds one activity slot for its whole step. A worker with fewer
    slots than the wave has nodes runs the wave in rounds, and nobody is told: here the wave's
    sixty agent restarts only return once all sixty are running at once."""
    fake = FakeCluster(workers=61)  # waves: worker-1 (canary), sixty workers, cp-1
    fake.agents_meet = {f"worker-{i}" for i in range(2, 62)}
    migration = spec(f"wave-wide-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 60})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        try:
            final = await asyncio.wait_for(handle.result(), DEADLOCK_SECONDS)
        except TimeoutError:
            raise AssertionError(
                f"the wave never had all its agents restarting at once: at most "
                f"{fake.most_agents_restarting} of 60") from None

    assert final.phase is Phase.COMPLETED
    assert fake.most_agents_restarting == 60
    assert [len(w.nodes) for w in final.waves] == [1, 60, 1]


async def test_a_failed_node_workflow_halts_the_cluster_not_its_wave(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.drain_blocked.add("worker-1")
    migration = spec(f"wave-failed-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked node")
        wave = blocked.nodes["worker-1"].wave
        await temporal_env.client.get_workflow_handle(
            node_workflow_id(handle.id, "worker-1")).terminate("lost")
        halted = await until(handle, lambda p: p.nodes["worker-1"].state is NodeState.FAILED,
                             "the failed node")
        wave_run = await temporal_env.client.get_workflow_handle(
            wave_workflow_id(handle.id, wave)).describe()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    assert wave_run.status is WorkflowExecutionStatus.COMPLETED
    record = halted.nodes["worker-1"]
    assert record.error and "terminated" in record.error.lower(), record
    assert record.blocker  # the blocked record the node reported is kept, now failed
    assert halted.halted == f"node worker-1 failed: {record.error}"
    assert halted.phase is Phase.MIGRATING


async def test_an_abort_mid_wave_cancels_its_running_nodes_and_keeps_those_migrated(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=4)  # waves: worker-1 (canary), worker-2+3, worker-4, cp-1
    fake.drain_blocked.add("worker-2")
    migration = spec(f"wave-abort-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.nodes and
                    p.nodes["worker-2"].state is NodeState.BLOCKED, "a blocked node")
        # Its wave-mate ends while worker-2 waits; the cluster hears of it only at the wave's end.
        await temporal_env.client.get_workflow_handle(
            node_workflow_id(handle.id, "worker-3")).result()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)

    assert final.phase is Phase.CANCELLED
    assert {n: final.nodes[n].state for n in ("worker-1", "worker-2", "worker-3", "worker-4")} == {
        "worker-1": NodeState.MIGRATED, "worker-2": NodeState.CANCELLED,
        "worker-3": NodeState.MIGRATED, "worker-4": NodeState.PENDING}
    assert not fake.cordoned and "worker-2" not in fake.labelled  # worker-2 compensated


def wave_runs(history: Any) -> dict[str, list[str]]:
    """The WaveMigrations a cluster's history started: workflow ID -> the nodes given to it."""
    started = {}
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            continue
        child = event.start_child_workflow_execution_initiated_event_attributes
        if child.workflow_type.name == WAVE_WORKFLOW:
            started[child.workflow_id] = json.loads(child.input.payloads[0].data)["nodes"]
    return started


async def test_a_wave_larger_than_a_part_runs_as_parts_side_by_side(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=6)  # waves: worker-1 (canary), five workers, cp-1
    migration = spec(f"wave-parts-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 5})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start_with(temporal_env, migration, task_queue, wave_part_nodes=2)
        report = await handle.result()
        history = await handle.fetch_history()
        await record_histories(temporal_env.client, handle.id)

    assert report.phase is Phase.COMPLETED, report.error
    assert {n.state for n in report.nodes.values()} == {NodeState.MIGRATED}
    started = wave_runs(history)
    five = next(w for w in report.waves if len(w.nodes) == 5)
    parts = {i: nodes for i, nodes in started.items()
             if i.startswith(wave_workflow_id(handle.id, five.index) + "/")}
    # Three parts of at most two nodes, in the wave's order, each node in exactly one.
    assert sorted(parts) == [wave_workflow_id(handle.id, five.index, p) for p in range(3)]
    assert [n for p in sorted(parts) for n in parts[p]] == five.nodes
    assert max(len(nodes) for nodes in parts.values()) == 2
    # A wave within a part's size keeps its single WaveMigration, under the wave's own ID.
    canary = report.waves[0]
    assert started[wave_workflow_id(handle.id, canary.index)] == canary.nodes
    assert set(fake.boot.values()) == {1} and not fake.cordoned


async def test_an_abort_reaches_every_part_of_a_wave(temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=5)  # waves: worker-1 (canary), worker-2..5 in two parts, cp-1
    fake.drain_blocked.add("worker-4")  # in the second part
    migration = spec(f"wave-parts-abort-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 4})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start_with(temporal_env, migration, task_queue, wave_part_nodes=2)
        await until(handle, lambda p: p.nodes and
                    p.nodes["worker-4"].state is NodeState.BLOCKED, "a blocked node")
        for done in ("worker-2", "worker-3", "worker-5"):  # the first part, and worker-4's mate
            await temporal_env.client.get_workflow_handle(
                node_workflow_id(handle.id, done)).result()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)
        started = wave_runs(await handle.fetch_history())

    wave = final.nodes["worker-4"].wave
    assert [started[wave_workflow_id(handle.id, wave, p)] for p in (0, 1)] == [
        ["worker-2", "worker-3"], ["worker-4", "worker-5"]]
    assert final.phase is Phase.CANCELLED
    assert {n: final.nodes[n].state for n in ("worker-2", "worker-3", "worker-4", "worker-5")} == {
        "worker-2": NodeState.MIGRATED, "worker-3": NodeState.MIGRATED,
        "worker-4": NodeState.CANCELLED, "worker-5": NodeState.MIGRATED}
    assert final.nodes["cp-1"].state is NodeState.PENDING
    assert not fake.cordoned and "worker-4" not in fake.labelled  # worker-4 compensated
