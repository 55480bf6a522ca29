"""`cilium-migrate start|approve|pause|resume|decide|abort`: start a migration and steer it.

Every request to a running migration is an Update with an ID chosen here, so sending the same
request again (after a timeout, say) is answered from the first one instead of acting twice; a
request the migration refuses prints the workflow's reason and exits 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from client import exit_codes, migrations
from client.errors import CommandError
from client.plan_commands import add_kube_flags, read_spec
from client.temporal_flags import (
    add_temporal_flags,
    connection_flags,
    login_name,
    open_client,
    run,
)
from worker.build import TASK_QUEUE
from workflows.identity import APPROVE_UPDATE, DECIDE_UPDATE, PAUSE_UPDATE, RESUME_UPDATE
from workflows.messages import ApproveRequest, DecideRequest, Decision, PauseRequest

Request = TypeVar("Request", bound=BaseModel)


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    start = groups.add_parser("start", help="start the migration a spec describes (or attach "
                              "to the one already running for its cluster)")
    start.add_argument("-f", "--filename", type=Path, required=True, help="the migration spec")
    add_kube_flags(start)
    start.add_argument("--task-queue", default=TASK_QUEUE, metavar="QUEUE",
                       help="task queue of the workers that run it (default: %(default)s)")
    add_command(start, _start)

    approve = groups.add_parser("approve", help="approve a gate the migration waits at")
    approve.add_argument("cluster")
    approve.add_argument("gate", help="e.g. install, rollout, wave-2, node/worker-3, finalize")
    add_operator_flags(approve, who="approver")
    add_command(approve, _approve)

    pause = groups.add_parser("pause", help="start no new node; running nodes finish")
    pause.add_argument("cluster")
    add_operator_flags(pause)
    add_command(pause, _pause)

    resume = groups.add_parser("resume", help="go on after a pause or a halt")
    resume.add_argument("cluster")
    add_operator_flags(resume)
    add_command(resume, _resume)

    decide = groups.add_parser("decide", help="what a blocked node does next")
    decide.add_argument("cluster")
    decide.add_argument("node")
    decide.add_argument("decision", choices=[d.value for d in Decision])
    add_operator_flags(decide)
    add_command(decide, _decide)

    abort = groups.add_parser("abort", help="cancel the migration; nodes this run cordoned "
                              "are uncordoned")
    abort.add_argument("cluster")
    abort.add_argument("--wait", action="store_true",
                       help="wait until it stopped and show the nodes it uncordoned")
    add_command(abort, _abort)


def add_command(parser: argparse.ArgumentParser,
             body: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> None:
    add_temporal_flags(parser)
    parser.set_defaults(run=lambda args: run(args, body(args)))


def add_operator_flags(parser: argparse.ArgumentParser, who: str = "operator") -> None:
    parser.add_argument("--reason", default="", help="recorded in the migration's history")
    parser.add_argument("--as", dest="operator", default=login_name(),
                        help=f"{who} name, recorded as given (default: $USER, %(default)s)")
    parser.add_argument("--request-id", help="update ID: a request repeated with the same ID "
                        "is answered once (default for approve: the gate and approver; "
                        "otherwise new each time)")


def _next(args: argparse.Namespace, command: str) -> str:
    return f"cilium-migrate {command}{connection_flags(args)}"


async def _start(args: argparse.Namespace) -> int:
    spec = read_spec(args.filename)
    if args.kubeconfig or args.context:
        print("note: start does not use --kubeconfig/--context; the worker finds the cluster's "
              "credentials (its --kubeconfig/--cluster-kubeconfig, the spec's "
              "cluster.kubeconfigContext)", file=sys.stderr)
    client = await open_client(args)
    started = await migrations.start(client, spec, args.task_queue)
    cluster = spec.cluster.name
    run_id = started.handle.result_run_id or started.handle.run_id
    if started.attached:
        description = await started.handle.describe()
        run_id = description.run_id
        print(f"A migration of cluster {cluster} is already running; attached to it "
              "(nothing new was started).")
        if started.same_spec is False:
            print(f"note: it runs with a different spec than {args.filename}; yours was not "
                  "applied (abort it first to start over)", file=sys.stderr)
    else:
        print(f"Started the migration of cluster {cluster}.")
    print(f"  workflow  {started.handle.id}")
    print(f"  run       {run_id}")
    print(f"Next: {_next(args, f'status {shlex.quote(cluster)} --watch')}")
    return exit_codes.OK


async def _approve(args: argparse.Namespace) -> int:
    request = _request(ApproveRequest, gate=args.gate, approver=args.operator, reason=args.reason)
    update_id = args.request_id or f"approve/{args.gate}/{args.operator}"
    return await _send(args, APPROVE_UPDATE, request, update_id)


async def _pause(args: argparse.Namespace) -> int:
    request = _request(PauseRequest, operator=args.operator, reason=args.reason)
    return await _send(args, PAUSE_UPDATE, request, args.request_id or f"pause/{uuid.uuid4()}")


async def _resume(args: argparse.Namespace) -> int:
    request = _request(PauseRequest, operator=args.operator, reason=args.reason)
    return await _send(args, RESUME_UPDATE, request, args.request_id or f"resume/{uuid.uuid4()}")


async def _decide(args: argparse.Namespace) -> int:
    request = _request(DecideRequest, node=args.node, decision=Decision(args.decision),
                       operator=args.operator, reason=args.reason)
    update_id = args.request_id or f"decide/{args.node}/{args.decision}/{uuid.uuid4()}"
    return await _send(args, DECIDE_UPDATE, request, update_id)


def _request(model: type[Request], **fields: object) -> Request:
    """The Update's input, or the flags it refuses (an empty --as) as bad input."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(f"{_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}"
                             for e in error.errors(include_url=False))
        raise CommandError(problems, exit_codes.INVALID_INPUT) from None


_FLAGS = {"approver": "--as", "operator": "--as", "reason": "--reason"}


async def _send(args: argparse.Namespace, name: str, request: object, update_id: str) -> int:
    client = await open_client(args)
    migration = await migrations.find_running(client, args.cluster)
    answer = await migrations.update(migration, name, request, update_id)
    print(f"{args.cluster}: {answer}")
    return exit_codes.OK


async def _abort(args: argparse.Namespace) -> int:
    client = await open_client(args)
    migration = await migrations.find_running(client, args.cluster)
    await migration.handle.cancel()  # the workflow compensates: that is what abort means
    print(f"Abort requested for cluster {args.cluster}: no new node starts, running nodes "
          "stop, and every node this run cordoned is uncordoned.")
    if not args.wait:
        print(f"Follow it with: {_next(args, f'status {shlex.quote(args.cluster)} --watch')}")
        return exit_codes.OK
    print("waiting for the migration to stop...", file=sys.stderr, flush=True)
    ended, final = await migrations.wait_for_end(client, migration)
    print(f"The migration ended: {ended.status}.")
    uncordoned, unsure = await migrations.uncordoned_by_abort(client, ended, final)
    none = "none (this run had cordoned no node)"
    print(f"Uncordoned: {', '.join(uncordoned) or none}")
    if unsure:
        raise CommandError(f"could not confirm the uncordon of {', '.join(unsure)}; check them "
                           "with kubectl", exit_codes.BLOCKED)
    return exit_codes.OK
