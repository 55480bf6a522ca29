"""`cilium-migrate history export|replay`: keep a migration's history, and check that today's
workflow code still replays it (a change that does not is a nondeterminism bug, caught here
before it breaks a running migration).

An export is `{"workflow_id": ..., "history": {...}}`, the layout of tests/histories (so an
exported run can become a replay test as it is): replay must use the real workflow ID, since the
node workflows' IDs derive from it. A long migration continues as new between waves; its export
holds every run of the chain (client/history_runs.py) and replay replays each. `replay` also
reads the bare history JSON of the Temporal CLI and UI (`temporal workflow show -o json`),
taking the ID from the history's first event.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from client import exit_codes, migrations
from client.errors import CommandError
from client.history_file import load_histories
from client.history_runs import fetch_runs, to_export
from client.temporal_flags import add_temporal_flags, open_client, run
from worker.build import WORKFLOWS


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    history = groups.add_parser("history", help="export a migration's history, or replay one")
    commands = history.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", help="write a migration's event history as JSON")
    export.add_argument("cluster")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                        help="where to write it ('-' for stdout)")
    export.add_argument("--run-id", help="a run other than the latest (with every run of "
                        "its chain)")
    add_temporal_flags(export)
    export.set_defaults(run=lambda args: run(args, _export(args)))

    for parent, name in ((commands, "replay"), (groups, "replay")):
        replay = parent.add_parser(name, help="replay an exported history against this "
                                   "version's workflow code (exit 2 if it diverges)")
        replay.add_argument("file", type=Path)
        replay.add_argument("--workflow-id", help="when the history does not record it")
        replay.add_argument("-v", "--verbose", action="store_true",
                            help="show the SDK's own log of the replay")
        replay.set_defaults(run=lambda args: run(args, _replay(args)))


async def _export(args: argparse.Namespace) -> int:
    client = await open_client(args)
    migration = await migrations.find(client, args.cluster)
    print(f"fetching the history of {migration.handle.id}...", file=sys.stderr, flush=True)
    runs = await fetch_runs(client, migration.handle.id, args.run_id)
    text = json.dumps(to_export(runs), indent=1)
    if str(args.output) == "-":
        sys.stdout.write(text + "\n")
    else:
        try:
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise CommandError(f"cannot write {args.output}: {error.strerror}") from None
        events = sum(len(run.events) for run in runs)
        which = (f"run {runs[0].run_id}" if len(runs) == 1
                 else f"{len(runs)} runs, continued as new, last {runs[-1].run_id}")
        print(f"wrote {events} events of {runs[0].workflow_id} ({which}) to {args.output}")
    return exit_codes.OK


async def _replay(args: argparse.Namespace) -> int:
    runs = load_histories(args.file, args.workflow_id)
    for number, history in enumerate(runs, start=1):
        which = f" (run {number} of {len(runs)})" if len(runs) > 1 else ""
        print(f"replaying {len(history.events)} events of {history.workflow_id}{which}...",
              file=sys.stderr, flush=True)
        failure = await replay(history, quiet=not args.verbose)
        if failure is not None:
            kind = "nondeterminism" if isinstance(failure, NondeterminismError) else "failure"
            raise CommandError(f"replay of {args.file}{which} failed ({kind}): "
                               f"{failure_reason(failure)}", exit_codes.BLOCKED)
    runs_note = f", {len(runs)} runs" if len(runs) > 1 else ""
    print(f"{args.file}: replays cleanly ({runs[0].workflow_id}{runs_note})")
    return exit_codes.OK


async def replay(history: WorkflowHistory, quiet: bool = True) -> BaseException | None:
    """Replays ``history`` with this version's workflows; the failure, or None if it matched.
    ``quiet`` keeps the SDK's logs of the failing activation (a traceback) off the terminal."""
    runtime = Runtime(telemetry=TelemetryConfig(logging=None)) if quiet else None
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter,
                        runtime=runtime)
    sdk_log = logging.getLogger("temporalio")
    level = sdk_log.level
    if quiet:
        sdk_log.setLevel(logging.CRITICAL)
    try:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    finally:
        sdk_log.setLevel(level)
    return result.replay_failure


def failure_reason(failure: BaseException) -> str:
    """The messages inside a failed activation, outermost first, without the Rust debug dump
    around them, e.g. "[TMPRL1100] Nondeterminism error: Activity type of scheduled event
    'x' does not match activity type of activity command 'y'"."""
    text = str(failure)
    messages = [m.replace('\\"', '"') for m in re.findall(r'message: "((?:[^"\\]|\\.)*)"',
                                                            text)]
    messages = [m.split("\\n")[0].strip() for m in messages if m.strip()]
    return ": ".join(messages[:2])[:500] if messages else _first_line(failure)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:500] if lines else type(error).__name__
