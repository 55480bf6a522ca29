"""Cilium installed as a migration installs it reaches the API server from every node.

The values are the product's: discovery, then the plan's initial values (what the
ClusterMigration workflow installs). The sandbox's agents turn Ready only when the API server
address they are given is one the nodes reach, so values copied from the client's kubeconfig
(127.0.0.1 here, as on kind) leave every agent crash-looping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.discovery import discover_cluster
from activities.kubeapi import Kube
from activities.registry import MigrationActivities
from plan.contract import ChartRef, CiliumWaitInput, HelmInput
from plan.planner import make_plan
from plan.policies import ClusterRef
from sandbox import cluster
from sandbox.toolchain import Toolchain
from sandbox.topology import Topology
from tests.conftest import CHART, Sandbox
from tests.helpers import agent_outcomes, wait_for
from tests.integration.migration_support import migration_spec

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def fresh(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    state_dir = tmp_path_factory.mktemp("install") / "state"
    # Two workers: the smallest cluster the preflight lets migrate (a drain needs somewhere to go).
    cluster.up(state_dir, nodes=3, control_planes=1)
    try:
        yield Sandbox(state_dir, toolchain, Kube(str(state_dir / "kubeconfig")),
                      Topology.load(state_dir / "topology.json"))
    finally:
        cluster.down(state_dir)


def test_cilium_installed_with_the_planned_values_turns_ready_on_every_node(
        fresh: Sandbox, tmp_path: Path) -> None:
    plan = make_plan(migration_spec("api-endpoint"), discover_cluster(fresh.kube))
    assert plan.can_run, plan.findings
    values = tmp_path / "values.json"
    values.write_text(json.dumps(plan.initial_values))
    # Without --wait: a crash-looping agent is reported as soon as it crashes, with its reason.
    fresh.helm("upgrade", "--install", "cilium", str(CHART), "-n", "kube-system",
               "-f", str(values))
    nodes = [n.name for n in fresh.topology.nodes]
    outcomes = wait_for(lambda: agent_outcomes(fresh.kube, nodes),
                        "every agent to be Ready or crash-looping", 120)
    endpoint = [plan.initial_values.get(key) for key in ("k8sServiceHost", "k8sServicePort")]
    assert outcomes == dict.fromkeys(nodes, "ready"), (
        f"k8sServiceHost/Port {endpoint}: {outcomes}")

    # The product's own install step, which waits for the rollout, agrees.
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(fresh.kubeconfig),
                                                helm=str(fresh.toolchain["helm"])))
    env, ref = ActivityEnvironment(), ClusterRef(name="api-endpoint")
    env.run(steps.helm_upgrade, HelmInput(cluster=ref, namespace="kube-system",
                                          chart=ChartRef(path=str(CHART)),
                                          values=plan.initial_values, timeout_seconds=60))
    status = env.run(steps.wait_for_cilium, CiliumWaitInput(cluster=ref, namespace="kube-system",
                                                            timeout_seconds=60))
    assert status.agents_ready == status.agents_desired == len(nodes)
