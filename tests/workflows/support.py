"""Driving a ClusterMigration on the test Temporal server: start it, read its progress, wait
for a state, approve gates as they open."""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory

from client.history_runs import fetch_runs, to_export
from plan.spec import MigrationSpec
from tests.fakes import FakeCluster
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import (
    WAVE_WORKFLOW,
    cluster_workflow_id,
    node_workflow_id,
    wave_workflow_id,
)
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


async def start_with(env: Any, migration: MigrationSpec, task_queue: str, **input: Any
                     ) -> WorkflowHandle[Any, Progress]:
    """Starts a migration with more of its input set than the spec (e.g. continue_as_new_at)."""
    return await env.client.start_workflow(
        ClusterMigrationWorkflow.run, MigrationInput(spec=migration, **input),
        id=cluster_workflow_id(migration.cluster.name), task_queue=task_queue)


@dataclass
class HistorySizes:
    """Events in each run of a migration's history, in each wave workflow's and in each node
    workflow's."""

    runs: list[int]
    nodes: dict[str, int]
    waves: dict[str, int]  # by workflow ID
    # The parent's events from the first node's start to the last node's end, over every run:
    # what migrating the nodes cost it, without the fixed steps (discover, install, finalize).
    migrating: int

    @property
    def parent_events_per_node(self) -> float:
        return self.migrating / len(self.nodes)

    @property
    def all_parent_events_per_node(self) -> float:
        return sum(self.runs) / len(self.nodes)

    @property
    def longest(self) -> int:
        return max([*self.runs, *self.waves.values(), *self.nodes.values()])


async def history_sizes(client: Client, migration_id: str, nodes: list[str]) -> HistorySizes:
    runs = await fetch_runs(client, migration_id)
    # A few at a time: 5,000 requests at once overload a dev server on a busy machine (it
    # answered "Namespace default is not found").
    asking = asyncio.Semaphore(16)

    async def node_history(node: str) -> WorkflowHistory:
        async with asking:
            return await client.get_workflow_handle(
                node_workflow_id(migration_id, node)).fetch_history()

    children = await asyncio.gather(*(node_history(node) for node in nodes))
    waves = await wave_histories(client, runs)
    kinds = [event.event_type for run in runs for event in run.events]
    first = kinds.index(EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    last = len(kinds) - kinds[::-1].index(EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED)
    return HistorySizes(runs=[len(run.events) for run in runs],
                        nodes={node: len(h.events) for node, h in zip(nodes, children,
                                                                      strict=True)},
                        waves={i: len(h.events) for i, h in waves.items()},
                        migrating=last - first)


async def wave_histories(client: Client, runs: list[WorkflowHistory]
                         ) -> dict[str, WorkflowHistory]:
    """The history of every WaveMigration the migration's runs started, by workflow ID."""
    started = [event.start_child_workflow_execution_initiated_event_attributes
               for run in runs for event in run.events if event.event_type
               == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
    ids = [child.workflow_id for child in started if child.workflow_type.name == WAVE_WORKFLOW]
    histories = await asyncio.gather(*(client.get_workflow_handle(i).fetch_history()
                                       for i in ids))
    return dict(zip(ids, histories, strict=True))


HISTORIES = Path(__file__).resolve().parent.parent / "histories"
RECORD_ENV = "CILIUM_MIGRATE_RECORD_HISTORIES"


async def record_histories(client: Client, migration_id: str, *nodes: str,
                           waves: tuple[int, ...] = ()) -> None:
    """Saves every run of a migration's history (and the named nodes' and waves') for the
    replay tests, in `history export`'s layout, when CILIUM_MIGRATE_RECORD_HISTORIES is set."""
    if not os.environ.get(RECORD_ENV):
        return
    for workflow_id in (migration_id, *(node_workflow_id(migration_id, n) for n in nodes),
                        *(wave_workflow_id(migration_id, w) for w in waves)):
        runs = await fetch_runs(client, workflow_id)
        name = re.sub(r"[^A-Za-z0-9_.-]", "__", workflow_id)
        (HISTORIES / f"{name}.json").write_text(json.dumps(to_export(runs)))
