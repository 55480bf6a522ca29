"""A cluster that names its task queue (`cluster.taskQueue`) has its steps run there, by a
worker holding only its credentials, while the workflows run on a central worker: a cluster's
steps wait while its worker is away (`status` and `fleet status` say so) and go on when it is
back; in a fleet, each cluster's worker sees only its own cluster."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from tests.cli.conftest import cli_env, run_cli
from tests.fakes import FakeCluster
from tests.workflows.support import approve_all, progress, record_histories, spec, start, until
from tests.workflows.test_fleet_workflow import fleet
from tests.workflows.test_fleet_workflow import start as start_fleet
from tests.workflows.test_fleet_workflow import until as fleet_until
from worker.build import build_worker
from workflows.fleet_progress import ClusterState, FleetPhase
from workflows.progress import Phase


@pytest.fixture
def central_queue() -> str:
    return f"central-{uuid.uuid4().hex[:8]}"


def address(env: Any) -> str:
    return str(env.client.service_client.config.target_host)


def rendering_only(fake: FakeCluster) -> list[Any]:
    """The central worker's steps: only rendering the chart, which touches no cluster."""
    return [step for step in fake.activities() if step.__name__ == "render_chart"]


async def test_steps_run_on_the_clusters_queue_and_wait_for_its_worker(
        temporal_env: Any, central_queue: str) -> None:
    fake = FakeCluster(workers=2)
    name = f"queue-{central_queue.removeprefix('central-')}"
    own_queue = f"cilium-migrate.{name}"
    migration = spec(name, cluster={"name": name, "taskQueue": own_queue},
                     approvals={"policy": "per-phase"})
    client = temporal_env.client
    async with build_worker(client, rendering_only(fake), task_queue=central_queue):
        handle = await start(temporal_env, fake, migration, central_queue)
        # No worker has ever served the cluster's queue: discovery waits, and status says why.
        await until(handle, lambda p: p.phase is Phase.DISCOVERING, "discovery")
        await asyncio.sleep(0.5)
        assert not fake.discovered
        shown = await run_cli("status", name, env=cli_env(address(temporal_env)))
        assert shown.code == 0, shown
        assert shown.out.startswith(f"Waiting for a worker: task queue {own_queue}, where "
                                    f"cluster {name}'s steps run: no worker polls it."), shown
        assert f"`cilium-migrate worker --task-queue {own_queue}`" in shown.out
        async with build_worker(client, fake.activities(), task_queue=own_queue):
            await until(handle, lambda p: p.pending_gates == ["install"], "the install gate")
        # The cluster's worker is gone: the install waits for it instead of running elsewhere.
        await handle.execute_update("approve", {"gate": "install", "approver": "alice"},
                                    result_type=str)
        await asyncio.sleep(1.0)
        waiting = await progress(handle)
        assert waiting.phase is Phase.INSTALLING and not fake.helm_values
        async with build_worker(client, fake.activities(), task_queue=own_queue):
            report = await approve_all(handle)
            await record_histories(client, handle.id, "worker-1")
        history = await handle.fetch_history()

    assert report.phase is Phase.COMPLETED
    assert fake.boot == dict.fromkeys(fake.nodes, 1)
    queues = {event.activity_task_scheduled_event_attributes.activity_type.name:
              event.activity_task_scheduled_event_attributes.task_queue.name
              for event in history.events
              if event.event_type is EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    assert queues.pop("render_chart") == central_queue
    assert set(queues.values()) == {own_queue}, queues


async def test_each_cluster_of_a_fleet_on_its_own_worker(temporal_env: Any,
                                                         central_queue: str) -> None:
    suffix = central_queue.removeprefix("central-")
    east, west = f"east-{suffix}", f"west-{suffix}"
    fakes = {east: FakeCluster(workers=2), west: FakeCluster(workers=2)}
    rollout = fleet(f"queues-{suffix}", [{"clusters": [east, west], "concurrency": 2}])
    rollout = rollout.model_copy(update={"clusters": [
        spec(c, cluster={"name": c, "taskQueue": f"cilium-migrate.{c}"},
             approvals={"policy": "none"}) for c in (east, west)]})
    client = temporal_env.client
    async with build_worker(client, rendering_only(fakes[east]), task_queue=central_queue), \
            build_worker(client, fakes[east].activities(), task_queue=f"cilium-migrate.{east}"):
        handle = await start_fleet(temporal_env, rollout, central_queue)
        await fleet_until(handle, lambda p: p.clusters[west].state is ClusterState.RUNNING,
                          "west's start")
        shown = await run_cli("fleet", "status", rollout.name,
                              env=cli_env(address(temporal_env)))
        assert shown.code == 0, shown
        assert "waiting for a worker: no worker polls it (task queue cilium-migrate." in (
            shown.out), shown
        async with build_worker(client, fakes[west].activities(),
                                task_queue=f"cilium-migrate.{west}"):
            report = await handle.result()

    assert report.phase is FleetPhase.COMPLETED
    assert {c.state for c in report.clusters.values()} == {ClusterState.COMPLETED}
    assert fakes[east].discovered == [east] and fakes[west].discovered == [west]
    assert all(fake.boot == dict.fromkeys(fake.nodes, 1) for fake in fakes.values())
