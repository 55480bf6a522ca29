"""Issue 13: the migration's own API traffic. One node's whole step sequence, as the node
workflow runs it (snapshot, cordon, drain, label, agent restart, reboot, verify, uncordon),
with the worker's own credentials, costs at most REQUESTS_PER_NODE requests, counted by the API
server's audit log (`sandbox.audit`). Watches are apart: how many a wait opens depends on how
long it waits (one per watch window), not on what the step asks for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import (
    DrainInput,
    HostCommandInput,
    LabelInput,
    NodeRef,
    RebootInput,
    RestartAgentInput,
    SnapshotInput,
    VerifyInput,
)
from plan.policies import ClusterRef, DrainPolicy, Overlays, RebootPolicy, VerifyPolicy
from plan.spec import DEFAULT_IMAGE
from sandbox import audit, pki
from sandbox.cluster import worker_kubeconfig
from tests.conftest import CILIUM_POOL, Sandbox
from tests.helpers import wait_for
from tests.integration.test_activities_node_to_cilium import CHECKS, NODE_CONFIG, ROLLBACK
from tests.integration.test_activities_nodes import preferring

pytestmark = pytest.mark.sandbox

REQUESTS_PER_NODE = 25  # the budget, watches apart
WORKER = pki.WORKER.user
CLUSTER = ClusterRef(name="sandbox")
# The events a migrated node keeps: started (cordoned), its reboot asked for, migrated
# (verified on Cilium), and handed back (uncordoned).
EVENTS = 4


@pytest.fixture
def node(sandbox: Sandbox, cilium: None) -> Iterator[str]:
    """A worker on flannel with one pod of ours on it; back on flannel afterwards."""
    name = sandbox.claim_worker()
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))
    ActivityEnvironment().run(steps.apply_node_config, NODE_CONFIG)
    yield name
    target = NodeRef(cluster=CLUSTER, node=name, migration_id="cleanup")
    env = ActivityEnvironment()
    env.run(steps.label_node, LabelInput(target=target, value=None))
    env.run(steps.run_host_command, HostCommandInput(target=target, name="rollback",
                                                     script=ROLLBACK, image=DEFAULT_IMAGE))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))


def test_one_nodes_migration_stays_within_the_request_budget(
        sandbox: Sandbox, node: str, namespace: str) -> None:
    # One pod for the drain to evict; its replacement goes elsewhere once the node is cordoned.
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        preferring("web", node))
    wait_for(lambda: sandbox.kube.get(f"/api/v1/namespaces/{namespace}/pods",
                                      fieldSelector=f"spec.nodeName={node}")["items"],
             "the pod on the node")
    steps = MigrationActivities(ActivityContext(
        default_kubeconfig=str(worker_kubeconfig(sandbox.state_dir))))
    env = ActivityEnvironment()
    target = NodeRef(cluster=CLUSTER, node=node, migration_id=f"budget-{node}")
    reboot = RebootPolicy(strategy="node-shell", timeout_seconds=60, image=DEFAULT_IMAGE)
    overlays = Overlays(cilium_namespace="kube-system", cilium_pools=[CILIUM_POOL],
                        flannel_network="10.244.0.0/16")

    since = audit.mark(sandbox.state_dir)
    snapshot = env.run(steps.snapshot_node, SnapshotInput(target=target, reboot=reboot))
    assert env.run(steps.cordon_node, target).cordoned_by_us
    drained = env.run(steps.drain_node, DrainInput(target=target,
                                                   policy=DrainPolicy(timeout_seconds=60)))
    env.run(steps.label_node, LabelInput(target=target))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=60,
        not_before=datetime.now(UTC)))
    env.run(steps.reboot_node, RebootInput(target=target, before=snapshot, policy=reboot,
                                           cilium_namespace="kube-system"))
    verified = env.run(steps.verify_node, VerifyInput(
        target=target, overlays=overlays, expect="cilium",
        policy=VerifyPolicy(image=DEFAULT_IMAGE, checks=CHECKS, timeout_seconds=60)))
    assert verified.passed
    assert any(pod.startswith(f"{namespace}/web-") for pod in drained.evicted)
    assert env.run(steps.uncordon_node, target) is True

    # The audit log is written a moment after the answers: wait for the last request, the
    # uncordon's event.
    events = audit.RequestKey(WORKER, "create", "events")
    counts = wait_for(lambda: (c := audit.count_requests(sandbox.state_dir, since)).of(
        WORKER)[events] >= EVENTS and c, "the audit log to record the last event")
    mine = counts.of(WORKER)
    table = "\n".join(f"{n:3d} {key.verb} {key.resource}" for key, n in
                      sorted(mine.items(), key=lambda item: -item[1]) if key.verb != "watch")
    assert mine[events] == EVENTS, table
    # One eviction per pod evicted (ours, and whatever else the scheduler put there).
    assert mine[audit.RequestKey(WORKER, "create", "pods/eviction")] == len(drained.evicted), table
    # A count, not a timing: every request below is asked for once on this path. The one
    # that could repeat is an eviction a budget refuses (none protects this pod), and a
    # watch whose resourceVersion expired lists again (not in a run this short).
    assert counts.total(WORKER) <= REQUESTS_PER_NODE, table
    print(f"\n{counts.total(WORKER)} requests for one node "
          f"({len(drained.evicted)} pod(s) evicted):\n{table}")
