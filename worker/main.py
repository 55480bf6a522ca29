"""The worker process: hosts the migration workflows and activities until SIGINT or SIGTERM.

Shutdown is graceful: polling stops at once, then the worker waits for the activities it is
running (Temporal hands anything unfinished to another worker, and every activity is
idempotent). Logs are structured, one event per line, as logfmt or JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from activities.context import ActivityContext
from activities.registry import activities
from worker.build import MAX_CONCURRENT_ACTIVITIES, TASK_QUEUE, build_worker

log = logging.getLogger("cilium_migrate.worker")

# logging.LogRecord's own attributes; anything else on a record is a structured field.
_RECORD_KEYS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


@dataclass(frozen=True)
class WorkerOptions:
    task_queue: str = TASK_QUEUE
    max_concurrent_activities: int = MAX_CONCURRENT_ACTIVITIES
    kubeconfig: str | None = None  # clusters without an entry below; None: $KUBECONFIG etc.
    cluster_kubeconfigs: Mapping[str, str] = field(default_factory=dict)
    helm: str = "helm"
    docker: str = "docker"  # for the docker reboot strategy (kind's node containers)


def activity_context(options: WorkerOptions) -> ActivityContext:
    return ActivityContext(kubeconfigs=dict(options.cluster_kubeconfigs),
                           default_kubeconfig=options.kubeconfig, helm=options.helm,
                           docker=options.docker)


async def serve(client: Client, options: WorkerOptions, stop: asyncio.Event,
                hosted: Sequence[Callable[..., Any]] | None = None) -> None:
    """Runs a worker until ``stop`` is set (or the worker fails), then shuts it down.

    ``hosted`` replaces the real activities (tests host fakes under the same names)."""
    if hosted is None:
        hosted = activities(activity_context(options))
        if shutil.which(options.helm) is None:
            log.warning("helm not found; installing Cilium will fail until it is",
                        extra={"helm": options.helm})
    worker = build_worker(client, hosted, task_queue=options.task_queue,
                          max_concurrent_activities=options.max_concurrent_activities)
    running = asyncio.create_task(worker.run())
    stopping = asyncio.create_task(stop.wait())
    log.info("worker started", extra={
        "task_queue": options.task_queue, "namespace": client.namespace,
        "address": client.service_client.config.target_host,
        "max_concurrent_activities": options.max_concurrent_activities,
        "clusters": ",".join(sorted(options.cluster_kubeconfigs)) or "-"})
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if running in done:  # a fatal worker error: report it, do not pretend to run on
        stopping.cancel()
        running.result()
        return
    log.info("shutting down: no new tasks; waiting for running activities")
    await worker.shutdown()
    await running
    log.info("worker stopped", extra={"task_queue": options.task_queue})


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM ask for a graceful stop; a second one ends the process at once."""
    loop = asyncio.get_running_loop()
    first: list[float] = []

    def on_signal(number: int) -> None:
        # `timeout` and terminals may deliver one request twice at once; a second request
        # is one that comes later.
        if first and loop.time() - first[0] > 1.0:
            log.error("second signal: exiting without waiting", extra={"signal": number})
            sys.stderr.flush()
            os._exit(128 + number)
        if not first:
            first.append(loop.time())
            log.info("signal received", extra={"signal": signal.Signals(number).name})
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)


class StructuredFormatter(logging.Formatter):
    """One event per line: ``time=... level=info logger=... msg="..." key=value`` or JSON."""

    def __init__(self, style: str = "logfmt") -> None:
        super().__init__()
        self.json = style == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        fields.update({k: v for k, v in vars(record).items()
                       if k not in _RECORD_KEYS and not k.startswith("_")})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self.json:
            return json.dumps(fields, default=str)
        return " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())


def _logfmt(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text)


def configure_logging(style: str = "logfmt", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
