"""`cilium-migrate worker`: run the workflows and activities here, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from client import argument_types, exit_codes
from client.errors import CommandError
from client.temporal_flags import add_temporal_flags, open_client, run
from worker.build import MAX_CONCURRENT_ACTIVITIES, TASK_QUEUE
from worker.main import WorkerOptions, configure_logging, serve, stop_on_signals


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    worker = groups.add_parser("worker", help="run the migration worker until interrupted")
    add_worker_flags(worker)
    worker.add_argument("--metrics-address", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    add_temporal_flags(worker)
    worker.set_defaults(run=lambda args: run(args, _worker(args)))


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worker")
    group.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig for clusters not named by "
                       "--cluster-kubeconfig (default: $KUBECONFIG, ~/.kube/config)")
    group.add_argument("--cluster-kubeconfig", action="append", default=[],
                       metavar="NAME=FILE", help="kubeconfig of the cluster NAME (the spec's "
                       "cluster.name); repeatable")
    group.add_argument("--helm", default="helm", metavar="PATH",
                       help="helm binary (default: %(default)s)")
    group.add_argument("--docker", default="docker", metavar="PATH",
                       help="docker binary, for the docker reboot strategy (default: "
                       "%(default)s)")
    group.add_argument("--task-queue", default=TASK_QUEUE, metavar="QUEUE",
                       help="default: %(default)s")
    group.add_argument("--max-concurrent-activities", type=argument_types.positive,
                       default=MAX_CONCURRENT_ACTIVITIES, metavar="N",
                       help="activities at once, each on its own thread: at least the widest "
                       "wave's nodes plus 4, summed over the migrations served at once; fewer "
                       "run a wave in rounds (default: %(default)s)")
    group.add_argument("--log-format", choices=("logfmt", "json"), default="logfmt")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       default="info")


def worker_options(args: argparse.Namespace) -> WorkerOptions:
    clusters: dict[str, str] = {}
    for item in args.cluster_kubeconfig:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"--cluster-kubeconfig {item!r}: expected NAME=FILE")
        clusters[name] = _existing(path)
    return WorkerOptions(task_queue=args.task_queue,
                         max_concurrent_activities=args.max_concurrent_activities,
                         kubeconfig=_existing(args.kubeconfig) if args.kubeconfig else None,
                         cluster_kubeconfigs=clusters, helm=args.helm, docker=args.docker)


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise CommandError(f"kubeconfig {path} does not exist", exit_codes.INVALID_INPUT)
    return str(Path(path).resolve())


async def _worker(args: argparse.Namespace) -> int:
    options = worker_options(args)
    configure_logging(args.log_format, args.log_level)
    runtime = None
    if args.metrics_address:
        from worker.metrics import prometheus_runtime

        try:
            runtime = prometheus_runtime(args.metrics_address)
        except ValueError as error:  # the SDK's: a bad address, or one already in use
            raise CommandError(f"--metrics-address {args.metrics_address}: {error}") from None
    client = await open_client(args, runtime=runtime)
    stop = asyncio.Event()
    stop_on_signals(stop)
    await serve(client, options, stop)
    return exit_codes.OK
