"""Our own metrics leave through the worker runtime's Prometheus endpoint, beside the SDK's."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
import uuid
from typing import Any

from temporalio.runtime import Runtime

from tests.fakes import FakeCluster
from tests.workflows.support import approve_all, spec
from worker.build import build_worker, connect
from worker.metrics import prometheus_runtime
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id
from workflows.messages import MigrationInput
from workflows.progress import NodeState, Phase


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def samples(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of every sample of ``name`` (with or without a `_total` suffix)."""
    pattern = re.compile(rf"^{name}(?:_total)?\{{(.*)\}} (\S+)$", re.MULTILINE)
    return [(labels, float(value)) for labels, value in pattern.findall(text)]


async def test_finished_nodes_and_gate_waits_are_counted(temporal_env: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime: Runtime = prometheus_runtime(address)
    client = await connect(temporal_env.client.service_client.config.target_host,
                           runtime=runtime)
    task_queue = f"metrics-{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(workers=2)
    migration = spec(f"metrics-{task_queue}", approvals={"policy": "per-phase",
                                                         "approvers": ["alice"]})
    async with build_worker(client, fake.activities(), task_queue=task_queue):
        handle = await client.start_workflow(
            ClusterMigrationWorkflow.run, MigrationInput(spec=migration),
            id=cluster_workflow_id(migration.cluster.name), task_queue=task_queue)
        await approve_all(handle)
        report = await handle.result()
        assert report.phase is Phase.COMPLETED
        migrated = sum(n.state is NodeState.MIGRATED for n in report.nodes.values())
        assert migrated == len(fake.nodes)

        # The runtime exports on its own schedule: poll until the counts are in.
        finished: list[tuple[str, float]] = []
        for _ in range(100):
            text = scrape(address)
            finished = samples(text, "cilium_migrate_nodes_finished")
            if any('state="migrated"' in labels and value == migrated
                   for labels, value in finished):
                break
            await asyncio.sleep(0.1)
        assert [value for labels, value in finished if 'state="migrated"' in labels] == [
            migrated], finished
        assert f'task_queue="{task_queue}"' in next(
            labels for labels, _ in finished if 'state="migrated"' in labels)

        gates = samples(text, "cilium_migrate_gate_wait_seconds_count")
        counted = {re.search(r'gate="([^"]+)"', labels).group(1): value  # type: ignore[union-attr]
                   for labels, value in gates}
        assert counted.get("install") == 1 and counted.get("finalize") == 1, gates
        assert "temporal_" in text  # the SDK's own metrics come out of the same endpoint


async def test_the_monitors_requests_are_exported_by_wave_and_pair_kind(
        temporal_env: Any, monkeypatch: Any) -> None:
    from activities import connectivity
    from tests.fake_kube import FollowedEchoPods
    from tests.unit.test_activities_connectivity import EchoNetwork, cluster
    from tests.workflows.test_connectivity_monitor import with_real_monitor

    monkeypatch.setattr(connectivity, "EchoPods", FollowedEchoPods)  # no thread on the fake

    address = f"127.0.0.1:{free_port()}"
    client = await connect(temporal_env.client.service_client.config.target_host,
                           runtime=prometheus_runtime(address))
    task_queue = f"metrics-{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(workers=1)
    network = EchoNetwork(cluster(4, cilium={0, 1}))
    network.dead.add("10.245.0.2")  # every request to echo-1 fails
    migration = spec(f"metrics-monitor-{task_queue}", approvals={"policy": "none"},
                     connectivity={"interval": "1s", "maxFailedRequests": 1_000})
    async with build_worker(client, with_real_monitor(fake, network), task_queue=task_queue):
        handle = await client.start_workflow(
            ClusterMigrationWorkflow.run, MigrationInput(spec=migration),
            id=cluster_workflow_id(migration.cluster.name), task_queue=task_queue)
        report = await handle.result()
        counted = {(w.index, kind): (c.requests, c.failed) for w in report.waves
                   if w.connectivity for kind, c in w.connectivity.by_kind.items()}
        assert any(failed for _, failed in counted.values())

        def exported(name: str) -> dict[tuple[int, str], float]:
            found = {}
            for labels, value in samples(scrape(address), name):
                wave, kind = (re.search(rf'{key}="([^"]+)"', labels) for key in ("wave", "kind"))
                if wave and kind and f'task_queue="{task_queue}"' in labels:
                    found[(int(wave.group(1)), kind.group(1))] = value
            return found

        # The runtime exports on its own schedule: poll until the counts are in.
        for _ in range(100):
            requests = exported("cilium_migrate_connectivity_requests")
            if requests == {key: float(r) for key, (r, _) in counted.items()}:
                break
            await asyncio.sleep(0.1)
        assert requests == {key: float(r) for key, (r, _) in counted.items()}
        failed = exported("cilium_migrate_connectivity_failed_requests")
        assert {k: v for k, v in failed.items() if v} == {
            key: float(f) for key, (_, f) in counted.items() if f}
