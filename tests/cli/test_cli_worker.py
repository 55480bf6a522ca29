"""`worker`: polls its task queue, logs one structured event per line, serves metrics, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from client.cli import build_parser
from client.worker_commands import worker_options
from tests.cli.conftest import REPO, Cli, cli_env
from worker.main import activity_context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def pollers(client: Any, queue: str) -> int:
    response = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
    return len(response.pollers)


async def test_worker_polls_serves_metrics_and_stops_on_sigterm(
        temporal_env: Any, address: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    queue, metrics = f"worker-{tmp_path.name}", f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli", "worker", "--task-queue", queue,
        "--cluster-kubeconfig", f"prod={kubeconfig}", "--log-format", "json",
        "--metrics-address", metrics, cwd=REPO, env=cli_env(address),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        started: dict[str, Any] = {}
        while not started:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
            assert line, "the worker exited before it started"
            event = json.loads(line)
            if event["msg"] == "worker started":
                started = event
        assert started["task_queue"] == queue and started["clusters"] == "prod"
        assert started["level"] == "info" and started["time"]
        for _ in range(100):  # the server sees the poller shortly after the first poll
            if await pollers(temporal_env.client, queue):
                break
            await asyncio.sleep(0.1)
        assert await pollers(temporal_env.client, queue) >= 1
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read())
        assert b"temporal_" in body
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    messages = [json.loads(line)["msg"] for line in rest.decode().splitlines()]
    assert messages[0] == "signal received" and messages[-1] == "worker stopped"


async def test_worker_flag_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    bad_pair, missing = await asyncio.gather(
        cli("worker", "--cluster-kubeconfig", "prod"),
        cli("worker", "--kubeconfig", str(tmp_path / "nope")))

    assert bad_pair.code == 1 and bad_pair.err == (
        "error: --cluster-kubeconfig 'prod': expected NAME=FILE\n"), bad_pair
    assert missing.code == 1 and missing.err == (
        f"error: kubeconfig {tmp_path / 'nope'} does not exist\n"), missing


def test_the_tools_named_on_the_command_line_reach_the_activities(tmp_path: Path) -> None:
    docker = str(tmp_path / "bin" / "docker")  # e.g. a shared-kernel sandbox's stand-in
    args = build_parser().parse_args(["worker", "--helm", "/opt/helm", "--docker", docker])
    context = activity_context(worker_options(args))
    assert (context.helm, context.docker) == ("/opt/helm", docker)
    defaults = activity_context(worker_options(build_parser().parse_args(["worker"])))
    assert (defaults.helm, defaults.docker) == ("helm", "docker")
