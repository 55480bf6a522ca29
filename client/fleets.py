"""The Temporal calls behind the `fleet` commands: start a fleet, find it, read it, and read
each of its clusters' own summary (the fleet keeps only what it decides; a cluster's phase and
nodes are the cluster workflow's to say).

A fleet is found as a migration is (`migrations.Migration`, its name shown as `fleet/NAME`), so
Updates to it go through `migrations.update` with the same refusals and exit codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from client import exit_codes, migrations, status_queries
from client.errors import CommandError
from client.worker_presence import absent_worker
from plan.fleet import Fleet
from workflows.fleet import FleetMigrationWorkflow
from workflows.fleet_progress import ClusterState, FleetProgress
from workflows.identity import (
    FLEET_ATTRIBUTE,
    FLEET_WORKFLOW,
    PROGRESS_QUERY,
    STAGE_ATTRIBUTE,
    fleet_workflow_id,
)
from workflows.messages import FleetInput
from workflows.progress_summary import ProgressSummary

FleetHandle = WorkflowHandle[FleetMigrationWorkflow, FleetProgress]


@dataclass(frozen=True)
class FleetStarted:
    handle: FleetHandle
    attached: bool  # this fleet was already running: nothing new was started


class FleetStatus(BaseModel):
    """`fleet status -o json|yaml`: the fleet's progress and each started cluster's summary
    (or why it could not be read)."""

    fleet: FleetProgress
    clusters: dict[str, ProgressSummary]
    problems: dict[str, str]


@dataclass(frozen=True)
class ClusterReading:
    """A cluster's own summary, and what stands in its way that it cannot say itself: why it
    could not be read, or that no worker serves its steps."""

    summary: ProgressSummary | None = None
    problem: str | None = None


async def start(client: Client, fleet: Fleet, task_queue: str) -> FleetStarted:
    try:
        handle = await client.start_workflow(
            FleetMigrationWorkflow.run, FleetInput(fleet=fleet),
            id=fleet_workflow_id(fleet.name), task_queue=task_queue,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(FLEET_ATTRIBUTE, fleet.name)]))
    except WorkflowAlreadyStartedError:
        return FleetStarted(client.get_workflow_handle_for(
            FleetMigrationWorkflow.run, fleet_workflow_id(fleet.name)), attached=True)
    return FleetStarted(handle, attached=False)


@dataclass(frozen=True)
class ListedFleet:
    name: str
    workflow_id: str
    status: str
    stage: str | None  # the stage it is in (or ended in)
    started_at: datetime
    closed_at: datetime | None


async def list_fleets(client: Client, running_only: bool = False
                      ) -> AsyncIterator[ListedFleet]:
    query = f"WorkflowType='{FLEET_WORKFLOW}'"
    if running_only:
        query += " AND ExecutionStatus='Running'"
    async for execution in client.list_workflows(query):
        attributes = execution.typed_search_attributes
        yield ListedFleet(
            name=attributes.get(FLEET_ATTRIBUTE) or execution.id.rsplit("/", 1)[-1],
            workflow_id=execution.id, status=migrations.status_name(execution.status),
            stage=attributes.get(STAGE_ATTRIBUTE), started_at=execution.start_time,
            closed_at=execution.close_time)


async def find(client: Client, name: str) -> migrations.Migration:
    """The fleet named ``name`` (running, or the last one that ran)."""
    handle = client.get_workflow_handle(fleet_workflow_id(name))
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no fleet {name} (workflow {fleet_workflow_id(name)}) in "
                               f"namespace {client.namespace}", exit_codes.NOT_FOUND) from None
        raise
    return migrations.Migration(f"fleet/{name}", handle, description)


async def find_running(client: Client, name: str) -> migrations.Migration:
    fleet = await find(client, name)
    if not fleet.running:
        raise CommandError(f"fleet {name} has ended ({fleet.status})", exit_codes.BLOCKED)
    return fleet


async def progress(client: Client, fleet: migrations.Migration) -> FleetProgress:
    """The fleet's own account: its result once completed, else its `progress` query (which
    a worker answers for ended runs too)."""
    if fleet.description.status is WorkflowExecutionStatus.COMPLETED:
        result: FleetProgress = await client.get_workflow_handle(
            fleet.handle.id, result_type=FleetProgress).result()
        return result
    try:
        answer: FleetProgress = await fleet.handle.query(
            PROGRESS_QUERY, result_type=FleetProgress,
            rpc_timeout=timedelta(seconds=migrations.ANSWER_TIMEOUT))
    except RPCError as error:
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
                            RPCStatusCode.FAILED_PRECONDITION):
            raise migrations.NoAnswer("progress query",
                                      fleet.description.task_queue) from None
        raise
    return answer


async def cluster_readings(client: Client, fleet: FleetProgress) -> dict[str, ClusterReading]:
    """Each started cluster's summary, asked of its own workflow (all at once): a cluster that
    does not answer is a line in the view, never the end of it."""
    started = [c.name for c in fleet.clusters.values() if c.state is not ClusterState.PENDING]

    async def read(cluster: str) -> ClusterReading:
        try:
            migration = await migrations.find(client, cluster)
            reading = await status_queries.read_summary(client, migration)
        except CommandError as error:
            return ClusterReading(problem=str(error))
        summary = reading.summary
        why = (await absent_worker(client, summary.task_queue)
               if migration.running and summary.task_queue else None)
        if why is not None:  # `status CLUSTER` gives the whole hint
            return ClusterReading(summary=summary, problem=f"waiting for a worker: {why} "
                                  f"(task queue {summary.task_queue})")
        return ClusterReading(summary=summary)

    answers = await asyncio.gather(*(read(cluster) for cluster in started))
    return dict(zip(started, answers, strict=True))
