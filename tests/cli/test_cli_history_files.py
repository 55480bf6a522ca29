"""`replay` given files that are not a history, or a damaged one: one line naming the file and
what is wrong, exit 1, never a traceback and never a hang (the SDK's replayer panics on a native
thread or waits forever on some of them: client/history_file.py checks those first)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import exit_codes
from client.cli import main
from client.errors import CommandError
from client.history_file import load_histories
from tests.cli.conftest import REPO, UNREACHABLE_ADDRESS, cli_env

SAVED = REPO / "tests/histories/before-bounded-history__cilium-migrate__happy__node__cp-1.json"
EXPORT: dict[str, Any] = json.loads(SAVED.read_text())
EVENTS: list[dict[str, Any]] = EXPORT["history"]["events"]


def export(events: list[dict[str, Any]], **fields: Any) -> str:
    return json.dumps({**EXPORT, "history": {"events": events}, **fields})


def started(**attributes: Any) -> str:
    events = copy.deepcopy(EVENTS)
    events[0]["workflowExecutionStartedEventAttributes"].update(attributes)
    return export(events)


def renumbered(events: list[dict[str, Any]], first: int = 1) -> list[dict[str, Any]]:
    return [{**event, "eventId": str(first + n)} for n, event in enumerate(events)]


SAVED_TEXT = SAVED.read_text()

# name -> (file content, what the error says)
DAMAGED: dict[str, tuple[str | bytes, str]] = {
    "empty": (b"", "is not JSON"),
    "blank": (b" \n\t", "is not JSON"),
    "words": (b"hello", "is not JSON"),
    "binary": (bytes(range(256)) * 4, "is not JSON"),
    "utf16": (SAVED_TEXT.encode("utf-16"), "is not JSON"),
    "truncated": (SAVED_TEXT[: len(SAVED_TEXT) // 2], "is not JSON"),
    "nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "null": ("null", "no events"),
    "number": ("1e999999", "no events"),
    "list": ("[1, 2]", "no events"),
    "events a number": ('{"events": 5}', "is not a Temporal history"),
    "events of numbers": ('{"events": [1, 2, 3]}', "is not a Temporal history"),
    "unknown event type": ('{"events": [{"eventId": "1", "eventType": "NOPE"}]}',
                           "first event is not the workflow's start"),
    "history a string": ('{"workflow_id": "a", "history": "x"}', "no events"),
    "runs a number": ('{"workflow_id": "a", "runs": 5}', "no events"),
    "runs empty": ('{"workflow_id": "a", "runs": []}', "no events"),
    "runs of numbers": ('{"workflow_id": "a", "runs": [1]}', "no events"),
    "workflow_id a list": (export(EVENTS, workflow_id=["x"]), "workflow_id is not a string"),
    "no workflow id": (json.dumps({"events": json.loads(started(workflowId=""))["history"][
        "events"]}), "does not record its workflow ID"),
    # The SDK's replayer hung on each of these.
    "start lost": (export(renumbered(EVENTS[1:])), "first event is not the workflow's start"),
    "reversed": (export(list(reversed(EVENTS))), "first event is not the workflow's start"),
    "no workflow type": (started(workflowType={}), "first event is not the workflow's start"),
    "only the start": (export(EVENTS[:1]), "holds only the workflow's start"),
    "ids from 2": (export(renumbered(EVENTS, first=2)), "event 1 has ID 2"),
    "ids missing": (export([{k: v for k, v in e.items() if k != "eventId"} for e in EVENTS]),
                    "event 1 has ID 0"),
    "events lost": (export(EVENTS[:10] + EVENTS[12:]), "event 11 has ID 13"),
}


# The SDK's replayer panicked on a native thread or waited forever on these: they run in a
# process of their own, so that a regression fails on the timeout instead of hanging the tests.
HUNG = {"start lost", "reversed", "no workflow type", "only the start", "ids from 2",
        "ids missing"}


@pytest.mark.parametrize("name", DAMAGED)
def test_a_damaged_history_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    content, expected = DAMAGED[name]
    path = tmp_path / "history.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())

    if name in HUNG:
        done = subprocess.run([sys.executable, "-m", "client.cli", "replay", str(path)],
                              cwd=REPO, env=cli_env(UNREACHABLE_ADDRESS), capture_output=True,
                              text=True, errors="replace", timeout=60)
        code, err = done.returncode, done.stderr
    else:
        code, err = main(["replay", str(path)]), capsys.readouterr().err

    assert code == exit_codes.INVALID_INPUT, err
    assert "Traceback" not in err and "panicked" not in err
    [line] = err.splitlines()
    assert line.startswith(f"error: {path}") and expected in line, line


# --- fuzzing the reader: any file gives runs to replay or a CommandError ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["events", "history", "runs", "workflow_id", "eventId",
                                       "eventType", "x"]) | st.text(max_size=8),
                      children, max_size=4),
    max_leaves=20)


@st.composite
def damaged_exports(draw: st.DrawFn) -> Any:
    """The saved export with a few events dropped, moved, or given junk in one field."""
    events = copy.deepcopy(EVENTS)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(events) - 1))
        action = draw(st.sampled_from(["drop", "move", "junk"]))
        if action == "drop" and len(events) > 1:
            del events[index]
        elif action == "move":
            events.insert(draw(st.integers(min_value=0, max_value=len(events) - 1)),
                          events.pop(index))
        else:
            key = draw(st.sampled_from(sorted(events[index])))
            events[index][key] = draw(json_values)
    return {**EXPORT, "history": {"events": events}}


@settings(derandomize=True, max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, damaged_exports()))
def test_fuzz_history_files_load_or_are_refused(document: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "history.json"
        path.write_text(json.dumps(document))
        try:
            runs = load_histories(path, workflow_id="cilium-migrate/fuzz")
        except CommandError as error:
            assert error.exit_code == exit_codes.INVALID_INPUT
            assert str(error).startswith(str(path))
            return
    for run in runs:
        assert [event.event_id for event in run.events] == list(range(1, len(run.events) + 1))
