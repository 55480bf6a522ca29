"""Reading a history file for `replay`: our export (client/history_runs.py) or the bare history
JSON of the Temporal CLI and UI, refused with one clear `CommandError` (exit 1) when it is not
one.

The SDK's replayer trusts its input: a history whose first event is not the start, whose event
IDs do not count 1, 2, 3..., or that holds nothing but the start makes it panic on a native
thread or wait forever, and the command would hang. Those are checked here, before replaying.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from client.errors import CommandError
from client.history_runs import exported_histories


def load_histories(path: Path, workflow_id: str | None = None) -> list[WorkflowHistory]:
    """Every run in the file (one for a bare history or a migration that never continued as
    new), first run first, each one the replayer can take."""
    data = _read_json(path)
    recorded: str | None = None
    histories: Any = [data]
    if isinstance(data, dict) and ("history" in data or "runs" in data):  # our export
        try:
            recorded, histories = data.get("workflow_id"), exported_histories(data)
        except (KeyError, TypeError):
            raise CommandError(f"{path} is not a Temporal history (no events)") from None
        if not isinstance(recorded, str | None):
            raise CommandError(f"{path}: workflow_id is not a string")
    if not histories or not all(isinstance(h, dict) and h.get("events") for h in histories):
        raise CommandError(f"{path} is not a Temporal history (no events)")
    try:
        runs = [WorkflowHistory.from_json("", h) for h in histories]
    except Exception as error:  # noqa: BLE001 - protobuf's parse errors have many types
        raise CommandError(f"{path} is not a Temporal history: {_first_line(error)}") from None
    for number, run in enumerate(runs, start=1):
        _check_replayable(run, f"{path}" + (f" (run {number})" if len(runs) > 1 else ""))
    # Replay needs the real ID: the node workflows' IDs derive from it.
    workflow_id = (workflow_id or recorded
                   or runs[0].events[0].workflow_execution_started_event_attributes.workflow_id)
    if not workflow_id:
        raise CommandError(f"{path} does not record its workflow ID; pass --workflow-id")
    return [WorkflowHistory(workflow_id, run.events) for run in runs]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:  # also UnicodeDecodeError: binary junk
        raise CommandError(f"{path} is not JSON: {error}") from None
    except RecursionError:
        raise CommandError(f"{path} is not a Temporal history: JSON nested too deeply") from None


def _check_replayable(history: WorkflowHistory, where: str) -> None:
    events = history.events
    first = events[0]
    if (first.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
            or not first.workflow_execution_started_event_attributes.workflow_type.name):
        raise CommandError(f"{where} is not a whole history: its first event is not the "
                           "workflow's start (with its type)")
    for position, event in enumerate(events, start=1):
        if event.event_id != position:
            raise CommandError(f"{where} is not a whole history: event {position} has ID "
                               f"{event.event_id} (events lost, reordered or renumbered?)")
    if len(events) == 1:
        raise CommandError(f"{where} holds only the workflow's start: nothing to replay")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:500] if lines else type(error).__name__
