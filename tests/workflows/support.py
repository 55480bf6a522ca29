"""Driving a ClusterMigration on the test Temporal server: start it, read its progress, wait
for a state, approve gates as they open."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import WorkflowHandle

from plan.spec import MigrationSpec
from tests.fakes import FakeCluster
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id
from workflows.messages import ApproveRequest, MigrationInput
from workflows.progress import Progress


def spec(name: str, **sections: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": name}, **sections})


async def start(env: Any, fake: FakeCluster, migration: MigrationSpec, task_queue: str
                ) -> WorkflowHandle[Any, Progress]:
    return await env.client.start_workflow(
        ClusterMigrationWorkflow.run, MigrationInput(spec=migration),
        id=cluster_workflow_id(migration.cluster.name), task_queue=task_queue)


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


async def approve_all(handle: WorkflowHandle[Any, Progress], approver: str = "alice") -> Progress:
    """Approves each gate as it opens, until the run ends; returns the final progress."""
    while True:
        current = await progress(handle)
        if current.phase.ended:
            return current
        for gate in current.pending_gates:
            await handle.execute_update(ClusterMigrationWorkflow.approve, ApproveRequest(
                gate=gate, approver=approver, reason=f"checked {gate}"))
        await asyncio.sleep(0.05)
