"""`cilium-migrate status` and `cilium-migrate list`: what migrations exist and where they are."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from client import exit_codes, migrations
from client.rendering import OUTPUT_FORMATS, dump
from client.status_view import Screen, render_list, render_progress
from client.temporal_flags import add_temporal_flags, connection_flags, open_client, run
from workflows.progress import Progress


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = groups.add_parser("status", help="where a migration is: phase, waves, nodes, "
                               "gates waiting for approval")
    status.add_argument("cluster", nargs="?", help="default: the one running migration")
    status.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    status.add_argument("-w", "--watch", action="store_true",
                        help="redraw on every change until the run ends (exit 0 when it "
                        "completed, 2 when it failed or was aborted)")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between "
                        "refreshes with --watch (default: %(default)s)")
    add_temporal_flags(status)
    status.set_defaults(run=lambda args: run(args, _status(args)))

    listing = groups.add_parser("list", help="every migration in the namespace")
    listing.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    listing.add_argument("--running", action="store_true", help="only running migrations")
    add_temporal_flags(listing)
    listing.set_defaults(run=lambda args: run(args, _list(args)))


async def _status(args: argparse.Namespace) -> int:
    client = await open_client(args)
    cluster = args.cluster or await migrations.the_running_cluster(client)
    if not args.watch:
        migration, current = await _read(client, cluster)
        print(_format(migration, current, args))
        return exit_codes.OK
    with Screen(sys.stdout) as screen:
        while True:
            migration, current = await _read(client, cluster)
            screen.show(_format(migration, current, args))
            if not migration.running:
                completed = migration.description.status is WorkflowExecutionStatus.COMPLETED
                return exit_codes.OK if completed else exit_codes.BLOCKED
            await asyncio.sleep(args.interval)


async def _read(client: Client, cluster: str) -> tuple[migrations.Migration, Progress]:
    # Describe every time: the run may end (or a new one start) while we watch.
    migration = await migrations.find(client, cluster)
    return migration, await migrations.progress(client, migration)


def _format(migration: migrations.Migration, progress: Progress,
            args: argparse.Namespace) -> str:
    if args.output != "table":
        return dump(progress, args.output).rstrip("\n")
    text = render_progress(progress, connection=connection_flags(args))
    if not migration.running and not progress.phase.ended:
        # Ended from outside (e.g. `temporal workflow terminate`): its last report is stale.
        text += (f"\n\nNote: the workflow was {migration.status}; this is the last state "
                 "it reported.")
    return text


async def _list(args: argparse.Namespace) -> int:
    client = await open_client(args)
    listed = [m async for m in migrations.list_migrations(client, running_only=args.running)]
    # Counts come from each running migration itself; ended ones show their last phase only.
    counts = await asyncio.gather(*(_counts(client, m) for m in listed))
    if args.output == "table":
        rows = [[m.cluster, m.status, m.phase or "-", _when(m.started_at), _summary(c),
                 ", ".join(waiting) or "-", m.workflow_id] for m, (c, waiting) in
                zip(listed, counts, strict=True)]
        print(render_list(rows))
        return exit_codes.OK
    data = [{"cluster": m.cluster, "workflowId": m.workflow_id, "runId": m.run_id,
             "status": m.status, "phase": m.phase, "startedAt": m.started_at.isoformat(),
             "closedAt": m.closed_at.isoformat() if m.closed_at else None,
             "taskQueue": m.task_queue, "nodes": c, "pendingGates": waiting}
            for m, (c, waiting) in zip(listed, counts, strict=True)]
    print(json.dumps(data, indent=2) if args.output == "json"
          else yaml.safe_dump(data, sort_keys=False).rstrip("\n"))
    return exit_codes.OK


async def _counts(client: Client, listed: migrations.Listed
                  ) -> tuple[dict[str, int] | None, list[str]]:
    progress = await migrations.running_progress(client, listed)
    return (progress.counts(), progress.pending_gates) if progress else (None, [])


def _summary(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return " ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
