"""A migration's history is a chain of runs: a long migration continues as new between waves
(workflows/continuation.py), each run a history of its own under the same workflow ID. Here:
fetching every run of the chain, and the export file that holds them.

The file is `{"workflow_id": ..., "history": {...}}` for a migration of one run (the layout of
tests/histories and of earlier exports) and `{"workflow_id": ..., "runs": [{"run_id": ...,
"history": {...}}, ...]}`, first run first, for a chain.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHistory

# No migration continues as new this often; a guard against a chain that loops.
MAX_RUNS = 1_000


async def fetch_runs(client: Client, workflow_id: str,
                     run_id: str | None = None) -> list[WorkflowHistory]:
    """Every run of the chain that ``run_id`` (default: the latest run) belongs to, in order.
    Runs of an earlier migration of the same cluster (the ID is reused) are not in the chain."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    runs = [history]
    while (previous := _continued_from(runs[0])) and len(runs) < MAX_RUNS:
        runs.insert(0, await client.get_workflow_handle(
            workflow_id, run_id=previous).fetch_history())
    while (following := _continued_as(runs[-1])) and len(runs) < MAX_RUNS:
        runs.append(await client.get_workflow_handle(
            workflow_id, run_id=following).fetch_history())
    return runs


def to_export(runs: list[WorkflowHistory]) -> dict[str, Any]:
    if len(runs) == 1:
        return {"workflow_id": runs[0].workflow_id, "history": runs[0].to_json_dict()}
    return {"workflow_id": runs[0].workflow_id,
            "runs": [{"run_id": run.run_id, "history": run.to_json_dict()} for run in runs]}


def exported_histories(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The history JSON of each run in an export, first run first."""
    if "runs" in data:
        return [run["history"] for run in data["runs"]]
    return [data["history"]]


def _continued_from(history: WorkflowHistory) -> str | None:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.continued_execution_run_id or None


def _continued_as(history: WorkflowHistory) -> str | None:
    last = history.events[-1]
    if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
        return None
    return last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id or None
