"""The Temporal calls behind the operator commands: find, start, ask, steer and list migrations.

Each function takes a connected client and returns our own models or raises `CommandError`
with the exit code a script can branch on; the command modules only parse and print.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from client import exit_codes
from client.errors import CommandError
from plan.spec import MigrationSpec
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import (
    CLUSTER_ATTRIBUTE,
    CLUSTER_WORKFLOW,
    FLEET_ATTRIBUTE,
    PHASE_ATTRIBUTE,
    PROGRESS_QUERY,
    cluster_of,
    cluster_workflow_id,
    node_workflow_id,
)
from workflows.messages import MigrationInput
from workflows.progress import NodeProgress, NodeState, Phase, Progress

# How long a query or an update may wait for a worker before we say that none is answering
# (a worker must replay the workflow to answer either).
ANSWER_TIMEOUT = float(os.environ.get("CILIUM_MIGRATE_ANSWER_TIMEOUT", "30"))
# A node child's own record is asked only for nodes running now (one wave's, or a few at finalize).
NODE_ANSWER_TIMEOUT = timedelta(seconds=5)
MAX_NODES_ASKED = 200

Handle = WorkflowHandle[ClusterMigrationWorkflow, Progress]


@dataclass(frozen=True)
class Migration:
    cluster: str
    handle: Handle
    description: WorkflowExecutionDescription

    @property
    def running(self) -> bool:
        return self.description.status is WorkflowExecutionStatus.RUNNING

    @property
    def status(self) -> str:
        return status_name(self.description.status)


@dataclass(frozen=True)
class Started:
    handle: Handle
    attached: bool  # a migration of this cluster was already running
    same_spec: bool | None = None  # when attached: was it started with this spec?


class NoAnswer(CommandError):
    def __init__(self, what: str, task_queue: str) -> None:
        super().__init__(f"no worker answered the {what} within {ANSWER_TIMEOUT:.0f}s; is "
                         f"`cilium-migrate worker` running on task queue {task_queue}?",
                         exit_codes.UNREACHABLE)


def status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower().replace("_", "-") if status else "unknown"


async def find(client: Client, cluster: str) -> Migration:
    """The latest migration of ``cluster`` (running, or the last one that ran)."""
    handle: Handle = client.get_workflow_handle_for(ClusterMigrationWorkflow.run,
                                                    cluster_workflow_id(cluster))
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no migration of cluster {cluster} (workflow "
                               f"{cluster_workflow_id(cluster)}) in namespace {client.namespace}",
                               exit_codes.NOT_FOUND) from None
        raise
    return Migration(cluster, handle, description)


async def find_running(client: Client, cluster: str) -> Migration:
    migration = await find(client, cluster)
    if not migration.running:
        raise CommandError(f"the migration of cluster {cluster} has ended ({migration.status})",
                           exit_codes.BLOCKED)
    return migration


async def start(client: Client, spec: MigrationSpec, task_queue: str) -> Started:
    cluster = spec.cluster.name
    attributes = TypedSearchAttributes([
        SearchAttributePair(CLUSTER_ATTRIBUTE, cluster),
        SearchAttributePair(PHASE_ATTRIBUTE, Phase.DISCOVERING.value)])
    try:
        handle = await client.start_workflow(
            ClusterMigrationWorkflow.run, MigrationInput(spec=spec),
            id=cluster_workflow_id(cluster), task_queue=task_queue, search_attributes=attributes)
    except WorkflowAlreadyStartedError:
        existing: Handle = client.get_workflow_handle_for(
            ClusterMigrationWorkflow.run, cluster_workflow_id(cluster))
        return Started(existing, attached=True,
                       same_spec=await _same_spec(client, existing, spec))
    return Started(handle, attached=False)


async def _same_spec(client: Client, handle: Handle, spec: MigrationSpec) -> bool | None:
    """Compares the running migration's input with ``spec``; None when it cannot tell."""
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        try:
            [running] = await client.data_converter.decode(payloads, [MigrationInput])
        except Exception:  # noqa: BLE001 - an older input shape: unknown, not an error
            return None
        return bool(running.spec == spec)
    return None


async def progress(client: Client, migration: Migration) -> Progress:
    """The migration's own account of itself. A completed run's result is its final progress,
    which needs no worker; anything else asks the workflow (a worker replays closed runs)."""
    if migration.description.status is WorkflowExecutionStatus.COMPLETED:
        return await migration.handle.result()
    try:
        current = await migration.handle.query(ClusterMigrationWorkflow.get_progress,
                                               rpc_timeout=timedelta(seconds=ANSWER_TIMEOUT))
    except RPCError as error:
        # No worker: the server says so at once when none polled lately, else the call times out.
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
                            RPCStatusCode.FAILED_PRECONDITION):
            raise NoAnswer("progress query", migration.description.task_queue) from None
        raise
    if migration.running:
        await with_running_steps(client, migration.handle.id, current.nodes.values())
    return current


# How a node workflow's own record says it ended (its result; FAILED and CANCELLED are the
# cluster's words for a node workflow that did not end by itself).
ENDED_BY_THE_NODE = (NodeState.MIGRATED, NodeState.ROLLED_BACK, NodeState.SKIPPED)


async def with_running_steps(client: Client, migration_id: str,
                             nodes: Iterable[NodeProgress]) -> None:
    """Fills in each running node's step (and rolling-back) from its own workflow: the parent
    does not hear of every step, to keep its history short. A node that already ended in a wave
    still running shows how it ended: the cluster hears of its wave's nodes when the wave's
    workflow ends. A node that does not answer keeps the parent's summary."""
    running = [n for n in nodes if n.state is NodeState.RUNNING]
    records = await node_records(client, migration_id, [n.name for n in running])
    for node in running:
        record = records.get(node.name)
        if record is not None:
            node.step = record.step
            if record.state in (NodeState.ROLLING_BACK, *ENDED_BY_THE_NODE):
                node.state = record.state


async def unfolded(client: Client, migration_id: str,
                   nodes: list[NodeProgress]) -> list[NodeProgress]:
    """``nodes`` with each folded record (a large migration's parent keeps of a migrated node
    only its wave and state) replaced by the node workflow's result, which has the rest, for
    at most MAX_NODES_ASKED nodes. A result that cannot be read leaves the folded record."""
    async def result(node: str) -> NodeProgress | None:
        handle = client.get_workflow_handle(node_workflow_id(migration_id, node),
                                            result_type=NodeProgress)
        try:
            record: NodeProgress = await handle.result(rpc_timeout=NODE_ANSWER_TIMEOUT)
        except (RPCError, WorkflowFailureError):
            return None
        return record

    folded = [n.name for n in nodes if n.folded][:MAX_NODES_ASKED]
    answers = await asyncio.gather(*(result(node) for node in folded))
    whole = {node: record for node, record in zip(folded, answers, strict=True) if record}
    return [whole.get(n.name, n) if n.folded else n for n in nodes]


async def node_records(client: Client, migration_id: str,
                       nodes: list[str]) -> dict[str, NodeProgress]:
    """The record each node's NodeMigration workflow keeps of itself (its `progress` query),
    for at most MAX_NODES_ASKED nodes; nodes that do not answer in time are left out."""
    async def ask(node: str) -> NodeProgress | None:
        handle = client.get_workflow_handle(node_workflow_id(migration_id, node))
        try:
            record: NodeProgress | None = await handle.query(
                PROGRESS_QUERY, result_type=NodeProgress, rpc_timeout=NODE_ANSWER_TIMEOUT)
        except RPCError:
            return None
        return record

    asked = nodes[:MAX_NODES_ASKED]
    answers = await asyncio.gather(*(ask(node) for node in asked))
    return {node: record for node, record in zip(asked, answers, strict=True) if record}


async def update(migration: Migration, name: str, request: Any, update_id: str) -> str:
    """Sends an operator Update; a refusal by the workflow's validator becomes exit code 2."""
    try:
        result = await migration.handle.execute_update(
            name, request, id=update_id, result_type=str,
            rpc_timeout=timedelta(seconds=ANSWER_TIMEOUT))
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise NoAnswer(f"{name} request (id {update_id}, safe to repeat)",
                       migration.description.task_queue) from None
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        reason = getattr(cause, "message", None) or str(cause or error)
        raise CommandError(f"{name} refused: {reason}", exit_codes.BLOCKED) from None
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:  # it ended between describe and update
            raise CommandError(f"{name} refused: the migration of cluster {migration.cluster} "
                               f"has ended", exit_codes.BLOCKED) from None
        raise
    return str(result)


async def wait_for_end(client: Client, migration: Migration) -> tuple[Migration, Progress]:
    """Waits until the run ends; then its final state and progress."""
    with contextlib.suppress(WorkflowFailureError):  # how a failed or cancelled run ends
        await migration.handle.result()
    ended = await find(client, migration.cluster)
    return ended, await progress(client, ended)


async def uncordoned_by_abort(client: Client, migration: Migration, final: Progress
                              ) -> tuple[list[str], list[str]]:
    """The nodes an abort uncordoned, and those it may not have (their compensation failed).

    A node's workflow ends as cancelled only once its compensation uncordoned what it had
    cordoned; the parent waits for that before it ends itself. Whether it had cordoned the node
    is in the node workflow's own record (the parent hears of a node mid-flight only when it is
    blocked)."""
    done: list[str] = []
    unsure: list[str] = []
    cancelled = [n for n in final.nodes.values() if n.state is NodeState.CANCELLED]
    records = await node_records(client, migration.handle.id, [n.name for n in cancelled])
    for node in cancelled:
        record = records.get(node.name)
        if record is not None and not record.cordoned_by_us:
            continue
        child = client.get_workflow_handle(node_workflow_id(migration.handle.id, node.name))
        try:
            status = (await child.describe()).status
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            status = None
        if status is not WorkflowExecutionStatus.CANCELED:
            unsure.append(node.name)
        elif record is not None:  # it had cordoned the node and its compensation ran
            done.append(node.name)
    return done, unsure


@dataclass(frozen=True)
class Listed:
    cluster: str
    workflow_id: str
    run_id: str
    status: str
    phase: str | None
    started_at: datetime
    closed_at: datetime | None
    task_queue: str
    fleet: str | None = None  # the fleet that started it, if one did


def _listed(execution: WorkflowExecution) -> Listed:
    attributes = execution.typed_search_attributes
    cluster = attributes.get(CLUSTER_ATTRIBUTE) or cluster_of(execution.id)
    return Listed(cluster=cluster, workflow_id=execution.id, run_id=execution.run_id,
                  status=status_name(execution.status), phase=attributes.get(PHASE_ATTRIBUTE),
                  started_at=execution.start_time, closed_at=execution.close_time,
                  task_queue=execution.task_queue, fleet=attributes.get(FLEET_ATTRIBUTE))


async def list_migrations(client: Client, running_only: bool = False) -> AsyncIterator[Listed]:
    # A run that continued as new is part of the migration its latest run shows.
    query = f"WorkflowType='{CLUSTER_WORKFLOW}' AND ExecutionStatus!='ContinuedAsNew'"
    if running_only:
        query += " AND ExecutionStatus='Running'"
    async for execution in client.list_workflows(query):
        yield _listed(execution)


async def running_progress(client: Client, listed: Listed) -> Progress | None:
    """A listed run's progress when it is running and answers quickly; else None (a listing
    must not fail, or wait long, because one run has no worker)."""
    if listed.status != "running":
        return None
    handle = client.get_workflow_handle(listed.workflow_id, run_id=listed.run_id)
    try:
        return await handle.query(PROGRESS_QUERY, result_type=Progress,
                                  rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None


async def the_running_cluster(client: Client) -> str:
    """The cluster of the one running migration, for commands given no cluster."""
    running = sorted({m.cluster async for m in list_migrations(client, running_only=True)})
    if len(running) == 1:
        return running[0]
    if not running:
        raise CommandError(f"no migration is running in namespace {client.namespace}; name a "
                           "cluster to see an ended one", exit_codes.NOT_FOUND)
    raise CommandError(f"{len(running)} migrations are running ({', '.join(running)}); name "
                       "the cluster", exit_codes.INVALID_INPUT)
