"""A whole migration of a kind-like lab (`sandbox up --shared-kernel`, the `docker` reboot
strategy): every node's container restarts exactly once, even when the worker dies in the middle
of a reboot, while every bootID stays what it was."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from activities.kubeapi import Kube
from sandbox.cluster import docker_shim
from sandbox.simulator.containers import read_container
from sandbox.simulator.faults import Fault, read_faults, write_faults
from sandbox.toolchain import Toolchain
from tests.helpers import wait_for
from tests.integration.migration_support import (
    WorkerProcess,
    fresh_sandbox,
    migration_spec,
    start_migration,
    wait_progress,
)
from workflows.progress import NodeState, NodeStep, Phase

pytestmark = pytest.mark.sandbox


def boot_ids(kube: Kube) -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["bootID"]
            for n in kube.get("/api/v1/nodes")["items"]}


def hold_kubelet_down(state_dir: Path, node: str, on: bool) -> None:
    path = state_dir / "faults.yaml"
    faults = read_faults(path)
    kinds = faults.setdefault(node, set())
    (kinds.add if on else kinds.discard)(Fault.REBOOT_NEVER_COMPLETES)
    write_faults(path, faults)


def restarts(state_dir: Path, node: str) -> int:
    record = read_container(state_dir, node)
    assert record is not None, f"no container for {node}"
    return record.restarts


async def test_a_worker_crash_during_a_docker_reboot_does_not_restart_the_node_again(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "kind"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=2, zones=1, shared_kernel=True) as kube:
        nodes = [n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]]
        before = boot_ids(kube)
        canary = "worker-1"
        # Its kubelet stays down after the container restarts, so the reboot step is still
        # waiting when its worker dies.
        hold_kubelet_down(state_dir, canary, True)
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"firstNodes": [canary]}, reboot={"strategy": "docker"})
        task_queue = f"kind-{uuid.uuid4().hex[:8]}"
        address = temporal_env.client.service_client.config.target_host
        workers = [WorkerProcess(address, task_queue, state_dir, toolchain, name,
                                 tmp_path / f"worker-{i}.log",
                                 docker=str(docker_shim(state_dir))) for i in range(2)]
        workers[0].start()
        try:
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: p.nodes.get(canary) and
                                p.nodes[canary].step is NodeStep.REBOOT, "the reboot", 600)
            wait_for(lambda: restarts(state_dir, canary) == 1, "the container restart", 120)
            workers[0].kill()
            workers[1].start()
            hold_kubelet_down(state_dir, canary, False)
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion", 900)
            report = await handle.result()
        finally:
            for worker in workers:
                worker.stop()
        assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())
        assert {n: restarts(state_dir, n) for n in nodes} == dict.fromkeys(nodes, 1)
        assert boot_ids(kube) == before  # the host's kernel never restarted
        assert all(report.nodes[n].boot_id_before == report.nodes[n].boot_id_after == before[n]
                   for n in nodes)
