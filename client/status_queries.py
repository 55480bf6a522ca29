"""The reads behind `status` and `list`: a run's bounded summary and its node records a page at
a time (workflows/progress_summary.py), so that `status` stays fast at thousands of nodes.

A completed run's result is its final Progress and needs no worker: the same views are built
from it here. A run whose worker predates these queries answers only the full `progress` query;
`read_summary` then falls back to it and says so in its note.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from client import exit_codes, migrations
from client.errors import CommandError
from workflows.identity import NODES_PAGE_QUERY, PROGRESS_SUMMARY_QUERY
from workflows.progress import NodeProgress, Progress
from workflows.progress_summary import (
    PAGE_LIMIT,
    NodesPage,
    NodesPageRequest,
    ProgressSummary,
    nodes_page,
    summarize,
)

# What the Python SDK's worker answers for a query name the workflow has no handler for.
UNKNOWN_QUERY = "expected but not found"


@dataclass(frozen=True)
class Reading:
    """One look at a run: its summary, and where further node pages come from."""

    client: Client
    migration: migrations.Migration
    summary: ProgressSummary
    full: Progress | None = None  # set when the run's whole progress was read instead
    note: str | None = None  # why the reading is not the run's own summary, for the operator

    async def page(self, request: NodesPageRequest) -> NodesPage:
        if self.full is not None:  # read whole, running steps included
            page = nodes_page(self.full, request)
        else:
            page = await _query(self.migration, NODES_PAGE_QUERY, NodesPage, request)
            if self.migration.running:  # the parent's records lack running nodes' step
                await migrations.with_running_steps(self.client, self.migration.handle.id,
                                                    page.nodes)
        page.nodes = await migrations.unfolded(self.client, self.migration.handle.id,
                                               page.nodes)
        return page

    async def nodes(self, request: NodesPageRequest, count: int | None = None) -> NodesPage:
        """``count`` records (all when None) from ``request.offset``, a page per query."""
        nodes: list[NodeProgress] = []
        offset = request.offset
        while True:
            wanted = PAGE_LIMIT if count is None else min(PAGE_LIMIT, count - len(nodes))
            page = await self.page(request.model_copy(update={"offset": offset,
                                                              "limit": wanted}))
            nodes += page.nodes
            offset += len(page.nodes)
            if not page.nodes or offset >= page.total or len(nodes) == count:
                return NodesPage(total=page.total, offset=request.offset, limit=len(nodes),
                                 nodes=nodes)


async def read_summary(client: Client, migration: migrations.Migration) -> Reading:
    if migration.description.status is WorkflowExecutionStatus.COMPLETED:
        final = await migrations.progress(client, migration)
        return Reading(client, migration, summarize(final), full=final)
    try:
        summary = await _query(migration, PROGRESS_SUMMARY_QUERY, ProgressSummary)
    except OldWorker:
        full = await migrations.progress(client, migration)
        return Reading(client, migration, summarize(full), full=full, note=(
            f"this run's worker predates the {PROGRESS_SUMMARY_QUERY} query, so status read "
            "the run's full progress (slow, and too large past a few thousand nodes); run a "
            "current `cilium-migrate worker` for this task queue"))
    return Reading(client, migration, summary)


class OldWorker(Exception):
    """The workflow has no handler for the query: its worker runs an older version."""


async def _query(migration: migrations.Migration, name: str, result_type: type[Any],
                 *args: Any) -> Any:
    try:
        return await migration.handle.query(
            name, *args, result_type=result_type,
            rpc_timeout=timedelta(seconds=migrations.ANSWER_TIMEOUT))
    except WorkflowQueryFailedError as error:
        if UNKNOWN_QUERY in str(error):
            raise OldWorker(str(error)) from None
        raise CommandError(f"the migration of cluster {migration.cluster} could not answer "
                           f"the {name} query: {error}", exit_codes.UNREACHABLE) from None
    except RPCError as error:
        # No worker: the server says so at once when none polled lately, else the call times out.
        if error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
                            RPCStatusCode.FAILED_PRECONDITION):
            raise migrations.NoAnswer("progress query",
                                      migration.description.task_queue) from None
        raise


async def running_counts(client: Client, listed: migrations.Listed
                         ) -> tuple[dict[str, int] | None, list[str]]:
    """A listed run's node counts and pending gates when it is running and answers quickly;
    else nothing (a listing must not fail, or wait long, because one run has no worker)."""
    if listed.status != "running":
        return None, []
    handle = client.get_workflow_handle(listed.workflow_id, run_id=listed.run_id)
    try:
        summary = await handle.query(PROGRESS_SUMMARY_QUERY, result_type=ProgressSummary,
                                     rpc_timeout=timedelta(seconds=5))
        return summary.counts, summary.pending_gates.items
    except WorkflowQueryFailedError:
        progress = await migrations.running_progress(client, listed)  # an older worker
        return (progress.counts(), progress.pending_gates) if progress else (None, [])
    except RPCError:
        return None, []
