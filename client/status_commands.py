"""`cilium-migrate status` and `cilium-migrate list`: what migrations exist and where they are."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from client import argument_types, exit_codes, fleets, migrations, status_queries
from client.approval_senders import ApprovalSenders
from client.errors import CommandError
from client.fleet_view import render_fleet_list
from client.rendering import OUTPUT_FORMATS, dump
from client.status_view import Screen, render_list, render_nodes, render_summary
from client.temporal_flags import add_temporal_flags, connection_flags, open_client, run
from client.worker_presence import absent_worker_hint
from workflows.progress import NodeState
from workflows.progress_summary import PAGE_LIMIT, NodesPageRequest, ProgressSummary

CURRENT_WAVE_ROWS = 50  # nodes of the current wave the default view lists; --wave lists all


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = groups.add_parser(
        "status", help="where a migration is: phase, counts, the current wave, nodes that need "
        "attention, gates waiting for approval",
        description="Shows the run's summary (its size does not grow with the node count) and "
        "the current wave's nodes. --nodes and --wave list node records instead, fetched a "
        f"page of at most {PAGE_LIMIT} per query. -o json|yaml prints the summary, or with "
        "--nodes/--wave {total, offset, limit, nodes: [...]}.")
    status.add_argument("cluster", nargs="?", help="default: the one running migration")
    status.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    status.add_argument("-w", "--watch", action="store_true",
                        help="redraw on every change until the run ends (exit 0 when it "
                        "completed, 2 when it failed or was aborted)")
    status.add_argument("--interval", type=argument_types.seconds, default=1.0,
                        help="seconds between refreshes with --watch (default: %(default)s)")
    status.add_argument("--nodes", type=_node_states, metavar="all|STATE[,STATE...]",
                        help="list the nodes in these states (all: every node); states: "
                        + ", ".join(s.value for s in NodeState))
    status.add_argument("--wave", type=argument_types.count, metavar="N",
                        help="list the nodes of wave N (0: nodes migrated after the planned "
                        "waves); with --nodes, only those in its states")
    status.add_argument("--offset", type=argument_types.count, default=0, metavar="N",
                        help="with --nodes/--wave: skip the first N matching nodes")
    status.add_argument("--limit", type=argument_types.positive, metavar="N",
                        help="with --nodes/--wave: list at most N nodes (default: all)")
    add_temporal_flags(status)
    status.set_defaults(run=lambda args: run(args, _status(args)))

    listing = groups.add_parser("list", help="every migration in the namespace, and the fleets "
                                "(`fleet list` for the fleets alone)")
    listing.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    listing.add_argument("--running", action="store_true", help="only running migrations")
    add_temporal_flags(listing)
    listing.set_defaults(run=lambda args: run(args, _list(args)))


def _node_states(text: str) -> list[NodeState]:
    """``all`` is every state (an empty filter); else comma-separated state names."""
    if text == "all":
        return []
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in NodeState._value2member_map_]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"no node state {', '.join(map(repr, unknown))}; use all or any of "
            + ", ".join(s.value for s in NodeState))
    return [NodeState(name) for name in names]


def _listing_nodes(args: argparse.Namespace) -> bool:
    return args.nodes is not None or args.wave is not None


async def _status(args: argparse.Namespace) -> int:
    if not _listing_nodes(args) and (args.offset or args.limit):
        raise CommandError("--offset and --limit page through --nodes or --wave",
                           exit_codes.INVALID_INPUT)
    client = await open_client(args)
    cluster = args.cluster or await migrations.the_running_cluster(client)
    senders = ApprovalSenders(client)
    if not args.watch:
        migration, reading = await _read(client, cluster)
        frame = await _format(migration, reading, args, senders)
        _warn(reading)
        print(frame)
        return exit_codes.OK
    warned = False
    with Screen(sys.stdout) as screen:
        while True:
            migration, reading = await _read(client, cluster)
            if not warned:
                warned = _warn(reading)
            screen.show(await _format(migration, reading, args, senders))
            if not migration.running:
                completed = migration.description.status is WorkflowExecutionStatus.COMPLETED
                return exit_codes.OK if completed else exit_codes.BLOCKED
            await asyncio.sleep(args.interval)


async def _read(client: Client, cluster: str
                ) -> tuple[migrations.Migration, status_queries.Reading]:
    # Describe every time: the run may end (or a new one start) while we watch.
    migration = await migrations.find(client, cluster)
    return migration, await status_queries.read_summary(client, migration)


def _warn(reading: status_queries.Reading) -> bool:
    """The fallback's note goes to stderr, so that -o json stays one document on stdout."""
    if reading.note:
        print(f"note: {reading.note}", file=sys.stderr)
    return bool(reading.note)


async def _format(migration: migrations.Migration, reading: status_queries.Reading,
                  args: argparse.Namespace, senders: ApprovalSenders) -> str:
    summary = reading.summary
    if _listing_nodes(args):
        _check_wave(summary, args.wave)
        page = await reading.nodes(NodesPageRequest(offset=args.offset, states=args.nodes or [],
                                                    wave=args.wave), count=args.limit)
        if args.output != "table":
            return dump(page, args.output).rstrip("\n")
        return render_nodes(summary, page, _which(args))
    # Beside each approver's claimed name, the identity of the client that sent the approval.
    summary.approvals.items = await senders.fill(
        migration.handle.id, migration.description.run_id, summary.approvals.items)
    if args.output != "table":
        return dump(summary, args.output).rstrip("\n")
    wave = summary.current_wave
    wave_nodes = None if wave is None else await reading.nodes(
        NodesPageRequest(wave=wave.index), count=CURRENT_WAVE_ROWS)
    text = render_summary(summary, wave_nodes, connection=connection_flags(args))
    if migration.running and summary.task_queue:
        hint = await absent_worker_hint(reading.client, summary.cluster, summary.task_queue)
        text = f"Waiting for a worker: {hint}\n\n{text}" if hint else text
    if not migration.running and not summary.phase.ended:
        # Ended from outside (e.g. `temporal workflow terminate`): its last report is stale.
        text += (f"\n\nNote: the workflow was {migration.status}; this is the last state "
                 "it reported.")
    return text


def _check_wave(summary: ProgressSummary, wave: int | None) -> None:
    if wave is None or wave == 0 or any(r.first <= wave <= r.last for r in summary.waves):
        return
    planned = f"waves 1-{summary.waves[-1].last}" if summary.waves else "no waves yet"
    raise CommandError(f"no wave {wave} in the migration of cluster {summary.cluster} "
                       f"({planned})", exit_codes.INVALID_INPUT)


def _which(args: argparse.Namespace) -> str:
    states = " or ".join(s.value for s in args.nodes) if args.nodes else ""
    return " ".join(part for part in (states, f"in wave {args.wave}"
                                      if args.wave is not None else "") if part) or "in all"


async def _list(args: argparse.Namespace) -> int:
    client = await open_client(args)
    listed = [m async for m in migrations.list_migrations(client, running_only=args.running)]
    # Counts come from each running migration itself; ended ones show their last phase only.
    counts = await asyncio.gather(*(status_queries.running_counts(client, m)
                                    for m in listed))
    if args.output == "table":
        rows = [[m.cluster, m.status, m.phase or "-", _when(m.started_at), _summary(c),
                 ", ".join(waiting) or "-", m.fleet or "-", m.workflow_id] for m, (c, waiting)
                in zip(listed, counts, strict=True)]
        print(render_list(rows))
        listed_fleets = [f async for f in fleets.list_fleets(client, running_only=args.running)]
        if listed_fleets:
            print("\n" + render_fleet_list(listed_fleets))
        return exit_codes.OK
    data = [{"cluster": m.cluster, "workflowId": m.workflow_id, "runId": m.run_id,
             "status": m.status, "phase": m.phase, "startedAt": m.started_at.isoformat(),
             "closedAt": m.closed_at.isoformat() if m.closed_at else None,
             "taskQueue": m.task_queue, "fleet": m.fleet, "nodes": c, "pendingGates": waiting}
            for m, (c, waiting) in zip(listed, counts, strict=True)]
    print(json.dumps(data, indent=2) if args.output == "json"
          else yaml.safe_dump(data, sort_keys=False).rstrip("\n"))
    return exit_codes.OK


def _summary(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return " ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
