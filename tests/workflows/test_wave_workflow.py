"""A wave's nodes run in a WaveMigration child of the cluster (workflows/wave.py): what the
cluster learns from it when a node's workflow fails and when the operator aborts mid-wave.
Decisions for a wave's blocked node (test_cluster_workflow.py) reach it the same way."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from tests.fakes import FakeCluster
from tests.workflows.support import progress, spec, start, until
from worker.build import build_worker
from workflows.identity import node_workflow_id, wave_workflow_id
from workflows.progress import NodeState, Phase


@pytest.fixture
def task_queue() -> str:
    return f"wave-{uuid.uuid4().hex[:8]}"


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
