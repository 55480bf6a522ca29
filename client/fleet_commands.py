"""`cilium-migrate fleet start|status|list|approve|pause|resume|decide|abort`: a fleet of clusters,
stage after stage (workflows/fleet.py). Thin wiring like the per-cluster commands: parse, call
`client.fleets`, print. Each cluster of a fleet stays an ordinary migration, steered with the
per-cluster commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from client import exit_codes, fleets, migrations
from client.fleet_view import render_fleet, render_fleet_list
from client.migration_commands import add_command, add_operator_flags
from client.plan_commands import read_fleet
from client.rendering import OUTPUT_FORMATS, dump
from client.status_view import Screen
from client.temporal_flags import connection_flags, open_client
from worker.build import TASK_QUEUE
from workflows.identity import APPROVE_UPDATE, DECIDE_UPDATE, PAUSE_UPDATE, RESUME_UPDATE
from workflows.messages import ApproveRequest, ClusterDecision, FleetDecideRequest, PauseRequest


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fleet = groups.add_parser("fleet", help="migrate many clusters in stages (a fleet file)")
    commands = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="start the fleet a fleet file describes (or "
                                "attach to it when it runs already)")
    start.add_argument("filename", type=Path, metavar="FILE", help="the fleet file")
    start.add_argument("--task-queue", default=TASK_QUEUE, metavar="QUEUE",
                       help="task queue of the workers that run it (default: %(default)s)")
    add_command(start, _start)

    status = commands.add_parser("status", help="per stage and cluster: state, phase, nodes "
                                 "migrated, gates, soak left")
    status.add_argument("name", help="the fleet's name")
    status.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    status.add_argument("-w", "--watch", action="store_true", help="redraw until the fleet "
                        "ends (exit 0 when it completed, 2 when it was aborted)")
    status.add_argument("--interval", type=float, default=2.0,
                        help="seconds between refreshes with --watch (default: %(default)s)")
    add_command(status, _status)

    listing = commands.add_parser("list", help="every fleet in the namespace")
    listing.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    listing.add_argument("--running", action="store_true", help="only running fleets")
    add_command(listing, _list)

    approve = commands.add_parser("approve", help="let a stage that needs approval start")
    approve.add_argument("name", help="the fleet's name")
    approve.add_argument("gate", help="stage-N")
    add_operator_flags(approve, who="approver")
    add_command(approve, _approve)

    for verb, body, text in (("pause", _pause, "start no new cluster or stage; running "
                              "clusters go on"),
                             ("resume", _resume, "go on after a pause")):
        parser = commands.add_parser(verb, help=text)
        parser.add_argument("name", help="the fleet's name")
        add_operator_flags(parser)
        add_command(parser, body)

    decide = commands.add_parser("decide", help="what the fleet does with a failed cluster")
    decide.add_argument("name", help="the fleet's name")
    decide.add_argument("cluster")
    decide.add_argument("decision", choices=[d.value for d in ClusterDecision])
    add_operator_flags(decide)
    add_command(decide, _decide)

    abort = commands.add_parser("abort", help="cancel the fleet: running clusters are "
                                "aborted (each uncordons what it cordoned), no other starts")
    abort.add_argument("name", help="the fleet's name")
    abort.add_argument("--wait", action="store_true", help="wait until the fleet stopped")
    add_command(abort, _abort)


async def _start(args: argparse.Namespace) -> int:
    fleet = read_fleet(args.filename)
    client = await open_client(args)
    started = await fleets.start(client, fleet, args.task_queue)
    if started.attached:
        print(f"Fleet {fleet.name} is already running; attached to it (nothing new was "
              "started).")
    else:
        stages = " -> ".join(f"{s.name} ({', '.join(s.clusters)})" for s in fleet.stages)
        print(f"Started fleet {fleet.name}: {stages}.")
    print(f"  workflow  {started.handle.id}")
    print(f"Next: cilium-migrate{connection_flags(args)} fleet status "
          f"{shlex.quote(fleet.name)} --watch")
    return exit_codes.OK


async def _status(args: argparse.Namespace) -> int:
    client = await open_client(args)
    if not args.watch:
        fleet, frame = await _frame(client, args)
        print(frame)
        return exit_codes.OK
    with Screen(sys.stdout) as screen:
        while True:
            fleet, frame = await _frame(client, args)
            screen.show(frame)
            if not fleet.running:
                completed = fleet.description.status is WorkflowExecutionStatus.COMPLETED
                return exit_codes.OK if completed else exit_codes.BLOCKED
            await asyncio.sleep(args.interval)


async def _frame(client: Client, args: argparse.Namespace
                 ) -> tuple[migrations.Migration, str]:
    fleet = await fleets.find(client, args.name)
    progress = await fleets.progress(client, fleet)
    readings = await fleets.cluster_readings(client, progress)
    if args.output != "table":
        report = fleets.FleetStatus(fleet=progress, clusters={
            name: r.summary for name, r in readings.items() if r.summary}, problems={
            name: r.problem for name, r in readings.items() if r.problem})
        return fleet, dump(report, args.output).rstrip("\n")
    text = render_fleet(progress, readings, datetime.now(UTC), connection_flags(args))
    if not fleet.running and not progress.phase.ended:
        text += (f"\n\nNote: the fleet's workflow was {fleet.status}; this is the last state "
                 "it reported.")
    return fleet, text


async def _list(args: argparse.Namespace) -> int:
    client = await open_client(args)
    listed = [f async for f in fleets.list_fleets(client, running_only=args.running)]
    if args.output == "table":
        print(render_fleet_list(listed))
        return exit_codes.OK
    data = [{"fleet": f.name, "workflowId": f.workflow_id, "status": f.status,
             "stage": f.stage, "startedAt": f.started_at.isoformat(),
             "closedAt": f.closed_at.isoformat() if f.closed_at else None} for f in listed]
    print(json.dumps(data, indent=2) if args.output == "json"
          else yaml.safe_dump(data, sort_keys=False).rstrip("\n"))
    return exit_codes.OK


async def _approve(args: argparse.Namespace) -> int:
    request = ApproveRequest(gate=args.gate, approver=args.operator, reason=args.reason)
    return await _send(args, APPROVE_UPDATE, request,
                       args.request_id or f"approve/{args.gate}/{args.operator}")


async def _pause(args: argparse.Namespace) -> int:
    request = PauseRequest(operator=args.operator, reason=args.reason)
    return await _send(args, PAUSE_UPDATE, request, args.request_id or f"pause/{uuid.uuid4()}")


async def _resume(args: argparse.Namespace) -> int:
    request = PauseRequest(operator=args.operator, reason=args.reason)
    return await _send(args, RESUME_UPDATE, request, args.request_id or f"resume/{uuid.uuid4()}")


async def _decide(args: argparse.Namespace) -> int:
    request = FleetDecideRequest(cluster=args.cluster, decision=ClusterDecision(args.decision),
                                 operator=args.operator, reason=args.reason)
    return await _send(args, DECIDE_UPDATE, request, args.request_id
                       or f"decide/{args.cluster}/{args.decision}/{uuid.uuid4()}")


async def _send(args: argparse.Namespace, name: str, request: object, update_id: str) -> int:
    client = await open_client(args)
    fleet = await fleets.find_running(client, args.name)
    answer = await migrations.update(fleet, name, request, update_id)
    print(f"fleet {args.name}: {answer}")
    return exit_codes.OK


async def _abort(args: argparse.Namespace) -> int:
    client = await open_client(args)
    fleet = await fleets.find_running(client, args.name)
    await fleet.handle.cancel()
    print(f"Abort requested for fleet {args.name}: no cluster starts any more, and each "
          "running cluster is aborted (it uncordons every node it cordoned).")
    if not args.wait:
        print(f"Follow it with: cilium-migrate{connection_flags(args)} fleet status "
              f"{shlex.quote(args.name)} --watch")
        return exit_codes.OK
    with contextlib.suppress(WorkflowFailureError):  # how a cancelled workflow ends
        await fleet.handle.result()
    ended = await fleets.find(client, args.name)
    print(f"Fleet {args.name} ended: {ended.status}.")
    return exit_codes.OK
