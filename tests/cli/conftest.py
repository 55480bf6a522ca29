"""The operator commands as an operator runs them: `python -m client.cli ...` in a subprocess,
against the session's Temporal dev server, with a worker in the test process hosting the real
workflows and the in-memory `FakeCluster` activities on the default task queue (`start` puts
migrations there). Each test migrates clusters of its own, so workflow IDs never collide, and
ends what it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from tests.fakes import FakeCluster
from tests.workflows.support import until
from worker.build import TASK_QUEUE, build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id
from workflows.progress import Progress

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE_ADDRESS = "127.0.0.1:1"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def cli_env(address: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: no Temporal settings from the user running the tests,
    the server given by TEMPORAL_ADDRESS (as an operator would export it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env.update(TEMPORAL_ADDRESS=address, TEMPORAL_CONFIG_FILE=str(REPO / ".no-temporal.toml"),
               PYTHONPATH=str(REPO), USER="alice", **extra)
    return env


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


Cli = Callable[..., Any]


@pytest.fixture
def address(temporal_env: Any) -> str:
    return str(temporal_env.client.service_client.config.target_host)


@pytest.fixture
def cli(address: str) -> Cli:
    """``await cli("status", name)`` runs one command against the session's server."""
    async def call(*args: str, timeout: float = 60.0, **env: str) -> Result:
        return await run_cli(*args, env=cli_env(address, **env), timeout=timeout)
    return call


class Migrations:
    """Names clusters for one test, writes their specs, and ends their runs afterwards."""

    def __init__(self, client: Client, directory: Path) -> None:
        self.client = client
        self.directory = directory
        self.names: list[str] = []

    def name(self) -> str:
        name = f"cli-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def spec(self, name: str, **sections: Any) -> Path:
        path = self.directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"cluster": {"name": name}, **sections}))
        return path

    def handle(self, name: str) -> WorkflowHandle[Any, Progress]:
        return self.client.get_workflow_handle_for(ClusterMigrationWorkflow.run,  # type: ignore[arg-type]
                                                   cluster_workflow_id(name))

    async def until(self, name: str, check: Callable[[Progress], Any], what: str) -> Progress:
        return await until(self.handle(name), check, what)

    async def end_others(self) -> None:
        """Terminates every running ClusterMigration this fixture did not start."""
        ours = {cluster_workflow_id(n) for n in self.names}
        query = 'WorkflowType="ClusterMigration" AND ExecutionStatus="Running"'
        async for run in self.client.list_workflows(query):
            if run.id not in ours:
                with contextlib.suppress(RPCError):  # ended meanwhile
                    await self.client.get_workflow_handle(run.id).terminate("another test's")

    async def end_all(self, nodes: list[str]) -> None:
        ids = [cluster_workflow_id(n) for n in self.names]
        ids += [f"{wid}/node/{node}" for wid in ids for node in nodes]
        for each in ids:
            with contextlib.suppress(RPCError):  # never started, or already ended
                await self.client.get_workflow_handle(each).terminate("test over")


@pytest.fixture
async def fake(temporal_env: Any) -> AsyncIterator[FakeCluster]:
    """A worker on the default task queue hosting fake activities for this test."""
    cluster = FakeCluster(workers=2)
    async with build_worker(temporal_env.client, cluster.activities(), task_queue=TASK_QUEUE):
        yield cluster


@pytest.fixture
async def migrations(temporal_env: Any, tmp_path: Path, fake: FakeCluster
                     ) -> AsyncIterator[Migrations]:
    tracked = Migrations(temporal_env.client, tmp_path)
    yield tracked
    await tracked.end_all(fake.nodes)
