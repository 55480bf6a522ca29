"""The real monitor step under the migration workflow on a real Temporal server: started when
a wave starts, cancelled when its nodes are done, and its figures arrive in the wave's record.
The other steps are the fake cluster's; the monitor's pods and pod proxy are a fake API
server's (tests/unit/test_activities_connectivity.py), so no packet is sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio import activity

from activities import connectivity
from activities.connectivity import monitor_connectivity
from plan.contract import Activity, ConnectivityFigures, MonitorInput
from tests.fake_kube import FollowedEchoPods
from tests.fakes import FakeCluster
from tests.unit.test_activities_connectivity import EchoNetwork, cluster
from tests.workflows.support import spec, start
from worker.build import build_worker
from workflows.progress import Phase, Progress


@pytest.fixture(autouse=True)
def _echo_pods_followed_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connectivity, "EchoPods", FollowedEchoPods)  # no thread on the fake


def with_real_monitor(fake: FakeCluster, network: EchoNetwork) -> list[Any]:
    """The real monitor on ``network``'s fake cluster; `connectivity.EchoPods` must be
    `FollowedEchoPods` meanwhile (this module's fixture does that)."""
    @activity.defn(name=Activity.MONITOR_CONNECTIVITY)
    def monitor(request: MonitorInput) -> ConnectivityFigures:
        return monitor_connectivity(network.kube, request)

    return [a for a in fake.activities()
            if a.__temporal_activity_definition.name != Activity.MONITOR_CONNECTIVITY] + [monitor]


async def migrate(temporal_env: Any, fake: FakeCluster, network: EchoNetwork,
                  name: str) -> Progress:
    """A whole run with the real monitor, one round a second; its final report."""
    task_queue = f"monitor-{uuid.uuid4().hex[:8]}"
    migration = spec(f"{name}-{task_queue}", approvals={"policy": "none"},
                     connectivity={"interval": "1s"})
    async with build_worker(temporal_env.client, with_real_monitor(fake, network),
                            task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        report: Progress = await handle.result()
    assert report.phase is Phase.COMPLETED
    return report


async def test_each_waves_monitor_is_cancelled_when_its_nodes_are_done_and_reports(
        temporal_env: Any) -> None:
    report = await migrate(temporal_env, FakeCluster(workers=2),
                           EchoNetwork(cluster(4, cilium={0})), "monitor")
    for wave in report.waves:
        figures = wave.connectivity
        assert figures is not None and figures.failed == 0 and figures.ended_at is not None


async def test_on_the_simulated_network_the_monitor_reports_why_it_measured_nothing(
        temporal_env: Any) -> None:
    network = EchoNetwork(cluster(3))
    network.refuse_all = True
    report = await migrate(temporal_env, FakeCluster(workers=1), network, "monitor-sim")
    assert not report.halted
    for wave in report.waves:
        figures = wave.connectivity
        assert figures is not None and (figures.requests, figures.failed) == (0, 0)
        assert figures.unavailable and "the simulated network carries no packets" in (
            figures.unavailable)
