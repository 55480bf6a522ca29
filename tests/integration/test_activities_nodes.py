"""Node bookkeeping and drain activities against the sandbox: cordon ownership, labels, and a
drain that evicts, skips DaemonSet pods and names the budget in its way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import (
    CORDONED_BY_ANNOTATION,
    ClusterRef,
    DrainInput,
    LabelInput,
    NodeRef,
    SnapshotInput,
    StepError,
)
from plan.facts import MIGRATION_LABEL
from plan.policies import DrainPolicy, RebootPolicy
from tests.conftest import Sandbox
from tests.helpers import deployment, ready_pods, wait_for

pytestmark = pytest.mark.sandbox

CLUSTER = ClusterRef(name="sandbox")
NODE_SHELL = RebootPolicy(strategy="node-shell", timeout_seconds=60, image="busybox:1.36")


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox) -> MigrationActivities:
    return MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))


@pytest.fixture(scope="module")
def node(sandbox: Sandbox) -> str:
    return sandbox.claim_worker()


@pytest.fixture(autouse=True)
def tidy_node(sandbox: Sandbox, node: str) -> Iterator[None]:
    """Each test leaves a schedulable node without migration marks, and without the pods of
    its namespace (deleted just before this runs), which the next drain would meet."""
    yield
    sandbox.kube.patch(f"/api/v1/nodes/{node}", {
        "metadata": {"annotations": {CORDONED_BY_ANNOTATION: None},
                     "labels": {MIGRATION_LABEL: None}},
        "spec": {"unschedulable": None}})
    # The node controller lifts its unschedulable taint a moment later; the scheduler heeds it.
    wait_for(lambda: not any(t["key"] == "node.kubernetes.io/unschedulable"
                             for t in node_object(sandbox, node)["spec"].get("taints") or []),
             "the unschedulable taint to go")
    wait_for(lambda: not leftovers(sandbox, node), "the test's pods to leave the node")


def leftovers(sandbox: Sandbox, node: str) -> list[str]:
    going = {n["metadata"]["name"] for n in sandbox.kube.get("/api/v1/namespaces")["items"]
             if n.get("status", {}).get("phase") == "Terminating"}
    return [p["metadata"]["name"] for p in sandbox.kube.get(
        "/api/v1/pods", fieldSelector=f"spec.nodeName={node}")["items"]
        if p["metadata"]["namespace"] in going]


def node_object(sandbox: Sandbox, node: str) -> dict[str, Any]:
    result: dict[str, Any] = sandbox.kube.get(f"/api/v1/nodes/{node}")
    return result


def test_only_the_run_that_cordoned_a_node_uncordons_it(
        sandbox: Sandbox, steps: MigrationActivities, node: str) -> None:
    env = ActivityEnvironment()
    ours = NodeRef(cluster=CLUSTER, node=node, migration_id="cilium-migrate/sandbox")
    other = NodeRef(cluster=CLUSTER, node=node, migration_id="cilium-migrate/other")

    before = env.run(steps.snapshot_node, SnapshotInput(target=ours, reboot=NODE_SHELL))
    assert (before.unschedulable, before.cordoned_by, before.ready) == (False, None, True)
    assert env.run(steps.cordon_node, ours).cordoned_by_us
    assert env.run(steps.cordon_node, ours).cordoned_by_us  # a retry: the same answer
    cordoned = env.run(steps.snapshot_node, SnapshotInput(target=ours, reboot=NODE_SHELL))
    assert (cordoned.unschedulable, cordoned.cordoned_by) == (True, ours.migration_id)

    assert not env.run(steps.cordon_node, other).cordoned_by_us
    assert env.run(steps.uncordon_node, other) is False
    assert node_object(sandbox, node)["spec"].get("unschedulable") is True

    assert env.run(steps.uncordon_node, ours) is True
    after = node_object(sandbox, node)
    assert not after["spec"].get("unschedulable")
    assert CORDONED_BY_ANNOTATION not in (after["metadata"].get("annotations") or {})
    assert env.run(steps.uncordon_node, ours) is False  # again: nothing of ours left

    # An operator's cordon, from before the migration, is theirs to lift.
    sandbox.kubectl("cordon", node)
    assert not env.run(steps.cordon_node, ours).cordoned_by_us
    assert env.run(steps.uncordon_node, ours) is False
    assert node_object(sandbox, node)["spec"].get("unschedulable") is True


def test_a_missing_node_is_reported_as_gone(steps: MigrationActivities) -> None:
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(steps.cordon_node,
                                  NodeRef(cluster=CLUSTER, node="no-such-node", migration_id="r"))
    assert raised.value.type == StepError.NODE_GONE and raised.value.non_retryable


def test_labels_are_ensured_and_removed(
        sandbox: Sandbox, steps: MigrationActivities, node: str) -> None:
    env = ActivityEnvironment()
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    env.run(steps.label_node, LabelInput(target=target))
    env.run(steps.label_node, LabelInput(target=target))
    assert node_object(sandbox, node)["metadata"]["labels"][MIGRATION_LABEL] == "true"
    env.run(steps.label_node, LabelInput(target=target, value=None))
    env.run(steps.label_node, LabelInput(target=target, value=None))
    assert MIGRATION_LABEL not in node_object(sandbox, node)["metadata"]["labels"]


def preferring(name: str, node: str, replicas: int = 1) -> dict[str, Any]:
    """A Deployment whose pods go to ``node`` while it is schedulable, elsewhere after."""
    body = deployment(name, replicas)
    body["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": [node]}]}}]}}
    return body


def pods_on(sandbox: Sandbox, namespace: str, selector: str, node: str) -> list[dict[str, Any]]:
    return [p for p in ready_pods(sandbox, namespace, selector) if p["spec"]["nodeName"] == node]


def test_drain_evicts_skips_daemonsets_and_names_the_budget_in_its_way(
        sandbox: Sandbox, steps: MigrationActivities, node: str, namespace: str) -> None:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    for name in ("web", "db"):
        sandbox.kube.create(deployments, preferring(name, node))
    sandbox.kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})
    web = wait_for(lambda: pods_on(sandbox, namespace, "app=web", node), "web on the node")[0]
    db = wait_for(lambda: pods_on(sandbox, namespace, "app=db", node), "db on the node")[0]
    wait_for(lambda: sandbox.kube.get(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/db-pdb"
    ).get("status", {}).get("currentHealthy") == 1, "the budget to count db")
    env.run(steps.cordon_node, target)

    with pytest.raises(ApplicationError) as raised:
        env.run(steps.drain_node, DrainInput(target=target,
                                             policy=DrainPolicy(timeout_seconds=3)))
    error = raised.value
    db_name, web_name = (f"{namespace}/{p['metadata']['name']}" for p in (db, web))
    assert error.type == StepError.DRAIN_BLOCKED and error.non_retryable
    assert db_name in error.message and f"{namespace}/db-pdb" in error.message
    assert "needs 1 healthy, has 1" in error.message
    [blocker] = error.details[0]
    assert (blocker["pod"], blocker["pdb"]) == (db_name, f"{namespace}/db-pdb")
    assert sandbox.kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/"
                                    f"{web['metadata']['name']}") is None
    assert web_name in beats[-1][0]["evicted"]

    # A second replica elsewhere lets the budget spare the one on the node.
    sandbox.kube.patch(f"{deployments}/db", {"spec": {"replicas": 2}})
    result = env.run(steps.drain_node, DrainInput(target=target,
                                                  policy=DrainPolicy(timeout_seconds=30)))
    assert db_name in result.evicted
    flannel = sandbox.kube.get("/api/v1/namespaces/kube-flannel/pods",
                               fieldSelector=f"spec.nodeName={node}")["items"]
    assert f"kube-flannel/{flannel[0]['metadata']['name']}" in result.skipped
    left = sandbox.kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")["items"]
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in left} == {"DaemonSet"}
    assert len(ready_pods(sandbox, namespace, "app=db")) >= 1


def test_drain_refuses_pods_with_local_data_unless_allowed(
        sandbox: Sandbox, steps: MigrationActivities, node: str, namespace: str) -> None:
    body = preferring("cache", node)
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", body)
    pod = wait_for(lambda: pods_on(sandbox, namespace, "app=cache", node), "cache")[0]
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(steps.drain_node, DrainInput(
            target=target, policy=DrainPolicy(timeout_seconds=30, delete_empty_dir_data=False)))
    assert raised.value.type == StepError.DRAIN_BLOCKED
    assert f"{namespace}/{pod['metadata']['name']}" in raised.value.message
    assert "emptyDir volume(s) scratch" in raised.value.message
    assert sandbox.kube.get_or_none(
        f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}") is not None


def test_drain_deletes_what_a_budget_protects_only_when_told_to(
        sandbox: Sandbox, steps: MigrationActivities, node: str, namespace: str) -> None:
    env = ActivityEnvironment()
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        preferring("db", node))
    sandbox.kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "db"}}}})
    db = wait_for(lambda: pods_on(sandbox, namespace, "app=db", node), "db on the node")[0]
    env.run(steps.cordon_node, target)

    result = env.run(steps.drain_node, DrainInput(
        target=target, policy=DrainPolicy(timeout_seconds=2, force_on_timeout=True)))
    assert result.forced == [f"{namespace}/{db['metadata']['name']}"]
    assert result.evicted == []
    assert sandbox.kube.get_or_none(
        f"/api/v1/namespaces/{namespace}/pods/{db['metadata']['name']}") is None
