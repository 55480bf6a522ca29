"""Servers that go away mid-run (issue 14): the Kubernetes control plane (etcd and the API
server, killed and started again with their data) during a drain and during a reboot wait, and
the Temporal server (stopped and started again on its state file) during a wave. The run rides
through on its own: nobody approves, retries or decides anything."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

from client.dev_commands import server_command
from plan.contract import Activity, DrainInput, DrainResult
from sandbox import cluster
from sandbox.processes import free_port, is_running
from sandbox.simulator.faults import Fault
from sandbox.toolchain import Toolchain
from tests.chaos.matrix import reboots
from tests.fakes import FakeCluster
from tests.helpers import set_fault, wait_for
from tests.integration.migration_support import (
    activity_context,
    fresh_sandbox,
    in_process_worker,
    migration_spec,
    slow_pod_node,
    start_migration,
    stop_process,
    wait_progress,
)
from tests.workflows.support import spec as fake_spec
from worker.build import build_worker, connect
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id
from workflows.messages import MigrationInput
from workflows.progress import NodeState, NodeStep, Phase

pytestmark = pytest.mark.sandbox

CONTROL_PLANE = ["etcd", "kube-apiserver"]
DOWN_SECONDS = 5.0


def node_ready(kube: Any, node: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in kube.get(f"/api/v1/nodes/{node}")["status"]["conditions"])


async def test_the_kubernetes_control_plane_restarting_mid_drain_and_mid_reboot_wait(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "apiserver-restarts"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=2, zones=1) as kube:
        canary = slow_pod_node(kube, state_dir)  # the canary's drain stays busy a while
        before = {n["metadata"]["name"]: n["status"]["nodeInfo"]["bootID"]
                  for n in kube.get("/api/v1/nodes")["items"]}
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"firstNodes": [canary]})
        task_queue = f"faults-{free_port()}"
        async with in_process_worker(temporal_env.client,
                                     activity_context(state_dir, toolchain, name), task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: p.nodes.get(canary) and
                                p.nodes[canary].step is NodeStep.DRAIN, "the drain", 300)
            # Waits off the event loop: the worker runs on it, in this process.
            await asyncio.to_thread(
                wait_for, lambda: any(p["metadata"].get("deletionTimestamp") for p in
                                      kube.get("/api/v1/namespaces/slow/pods")["items"]),
                "the eviction to be under way", 60)
            await asyncio.to_thread(cluster.crash_and_restart, state_dir, CONTROL_PLANE,
                                    DOWN_SECONDS)

            set_fault(state_dir, canary, Fault.REBOOT_NEVER_COMPLETES, True)
            await wait_progress(handle, lambda p: p.nodes[canary].step is NodeStep.REBOOT,
                                "the reboot", 300)
            try:
                await asyncio.to_thread(wait_for, lambda: not node_ready(kube, canary),
                                        "the node to go down", 120)
            except AssertionError as error:
                raise AssertionError(f"{error}; {simulator_state(state_dir)}") from None
            await asyncio.to_thread(cluster.crash_and_restart, state_dir, CONTROL_PLANE,
                                    DOWN_SECONDS)
            set_fault(state_dir, canary, Fault.REBOOT_NEVER_COMPLETES, False)  # power comes on

            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion", 900)
            report = await handle.result()
        assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())
        assert reboots(state_dir, before) == dict.fromkeys(before, 1)
        assert not any(n["spec"].get("unschedulable") for n in kube.get("/api/v1/nodes")["items"])


def simulator_state(state_dir: Path) -> str:
    """For a failure: whether the node simulator still runs (its stacks then go to its log)."""
    state = cluster.SandboxState.load(state_dir)
    pid = state.pids["node-simulator"]
    if not is_running(pid, state.programs["node-simulator"]):
        return f"the node simulator (pid {pid}) is not running"
    os.kill(pid, signal.SIGUSR1)
    return f"the node simulator (pid {pid}) runs; its threads' stacks are in its log"


class DevServer:
    """The `temporal` CLI's dev server on a fixed port and a state file, so it can be stopped
    and started again with everything it had."""

    def __init__(self, directory: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.command = server_command(argparse.Namespace(
            ip="127.0.0.1", port=int(self.address.rsplit(":", 1)[1]),
            db_file=directory / "temporal.db", headless=True), ui_port=0)
        self.log = directory / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        stop_process(self.process)

    async def client(self) -> Any:
        for _ in range(300):
            try:
                return await connect(self.address)
            except RuntimeError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"the dev server did not answer; see {self.log}")


async def test_the_temporal_server_restarting_mid_wave(tmp_path: Path) -> None:
    """A node's drain is running when the server stops; it finishes while the server is down,
    and its result reaches the server once it is back."""
    server = DevServer(tmp_path)
    fake = FakeCluster(workers=3)
    draining, released = asyncio.Event(), asyncio.Event()
    fakes = fake.activities()
    normal_drain = next(f for f in fakes if f.__name__ == "drain")

    @activity.defn(name=Activity.DRAIN_NODE)
    async def drain(input: DrainInput) -> DrainResult:
        if not draining.is_set():
            draining.set()
            await released.wait()
        result: DrainResult = await normal_drain(input)
        return result

    steps = [f for f in fakes if f is not normal_drain]
    server.start()
    try:
        client = await server.client()
        async with build_worker(client, [*steps, drain], task_queue="restart"):
            handle = await client.start_workflow(
                ClusterMigrationWorkflow.run,
                MigrationInput(spec=fake_spec("restart", approvals={"policy": "none"})),
                id=cluster_workflow_id("restart"), task_queue="restart")
            await asyncio.wait_for(draining.wait(), 120)
            await asyncio.to_thread(server.stop)
            released.set()  # the drain ends while nobody can hear of it
            await asyncio.sleep(DOWN_SECONDS)
            server.start()
            report = await handle.result()
    finally:
        server.stop()
    assert report.phase is Phase.COMPLETED
    assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())
    assert fake.boot == dict.fromkeys(fake.nodes, 1)

