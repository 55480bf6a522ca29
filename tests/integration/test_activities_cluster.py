"""Cluster-wide activities against the sandbox: Helm, waiting for Cilium, the node config,
rollout restarts, recycling pods left on flannel, the health check, and removing flannel."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import (
    ChartRef,
    CiliumWaitInput,
    HealthInput,
    HelmInput,
    HostCommandInput,
    LabelInput,
    NodeConfigInput,
    NodeRef,
    RecycleInput,
    RemoveFlannelInput,
    RestartAgentInput,
    RolloutRestartInput,
    StepError,
)
from plan.policies import ClusterRef
from plan.spec import DEFAULT_IMAGE
from tests.conftest import CHART, CILIUM_POOL, MIGRATION_VALUES, Sandbox
from tests.helpers import deployment, ready_pods, wait_for

pytestmark = pytest.mark.sandbox

CLUSTER = ClusterRef(name="sandbox")
IMAGE = DEFAULT_IMAGE
NODE_CONFIG_DEFAULTS = {
    "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
    "custom-cni-conf": "false", "cni-chaining-mode": "none", "cni-exclusive": "true",
}


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox, cilium: None) -> MigrationActivities:
    return MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig),
                                               helm=str(sandbox.toolchain["helm"])))


def test_helm_upgrade_names_the_value_the_chart_schema_rejects(
        steps: MigrationActivities, namespace: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(steps.helm_upgrade, HelmInput(
            cluster=CLUSTER, release="cilium-bad", namespace=namespace,
            chart=ChartRef(path=str(CHART)), values={"tunnelPort": "abc"}, timeout_seconds=30))
    error = raised.value
    assert error.type == StepError.HELM_FAILED and error.non_retryable
    assert "tunnelPort" in error.message and "want integer" in error.message


def test_helm_upgrade_reports_the_new_revision_and_cilium_becomes_ready(
        sandbox: Sandbox, steps: MigrationActivities) -> None:
    env = ActivityEnvironment()
    status = json.loads(sandbox.helm("status", "cilium", "-n", "kube-system", "-o", "json").stdout)
    result = env.run(steps.helm_upgrade, HelmInput(
        cluster=CLUSTER, namespace="kube-system", chart=ChartRef(path=str(CHART)),
        values=MIGRATION_VALUES, timeout_seconds=120))
    assert result.revision == status["version"] + 1

    cilium = env.run(steps.wait_for_cilium, CiliumWaitInput(
        cluster=CLUSTER, namespace="kube-system", timeout_seconds=60))
    assert cilium.agents_desired == len(sandbox.topology.nodes) == cilium.agents_ready
    assert cilium.operator_ready


def test_the_node_config_is_applied_idempotently_and_deleted(
        sandbox: Sandbox, steps: MigrationActivities, namespace: str) -> None:
    env = ActivityEnvironment()
    # Its own name and label, so no node in the shared sandbox is selected by it.
    request = NodeConfigInput(cluster=CLUSTER, namespace="kube-system", name=f"cfg-{namespace}",
                              api_version="cilium.io/v2",
                              label=f"cilium-migrate.io/test-{namespace}",
                              defaults=NODE_CONFIG_DEFAULTS)
    path = f"/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs/{request.name}"
    env.run(steps.apply_node_config, request)
    applied = sandbox.kube.get(path)
    assert applied["spec"] == {"nodeSelector": {"matchLabels": {request.label: "true"}},
                               "defaults": NODE_CONFIG_DEFAULTS}
    env.run(steps.apply_node_config, request)
    assert sandbox.kube.get(path)["metadata"]["resourceVersion"] == (
        applied["metadata"]["resourceVersion"])
    env.run(steps.delete_node_config, request)
    env.run(steps.delete_node_config, request)
    assert sandbox.kube.get_or_none(path) is None


def test_rollout_restart_restarts_once_per_value_and_waits(
        sandbox: Sandbox, steps: MigrationActivities, namespace: str) -> None:
    env = ActivityEnvironment()
    # Reads a node, modifies none: a DaemonSet of one pod, on one worker.
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/daemonsets", {
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                     "nodeSelector": {"kubernetes.io/hostname": sandbox.workers()[0]},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "agent", "image": "busybox:1.36"}]}}}})
    first = wait_for(lambda: ready_pods(sandbox, namespace, "app=agent"), "the agent pod")[0]
    request = RolloutRestartInput(cluster=CLUSTER, namespace=namespace, daemonset="agent",
                                  timeout_seconds=60, restarted_at="2030-01-01T00:00:00Z")

    env.run(steps.rollout_restart, request)
    [second] = ready_pods(sandbox, namespace, "app=agent")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    env.run(steps.rollout_restart, request)
    [third] = ready_pods(sandbox, namespace, "app=agent")
    assert third["metadata"]["uid"] == second["metadata"]["uid"]


@pytest.fixture
def switching(sandbox: Sandbox, steps: MigrationActivities) -> Iterator[NodeRef]:
    """A worker the test moves to Cilium; afterwards it goes back to flannel, so later tests
    in the session find new pods there on flannel as before."""
    target = NodeRef(cluster=CLUSTER, node=sandbox.claim_worker(), migration_id="r")
    yield target
    env = ActivityEnvironment()
    # The rollback's order: the agent that read the override would undo the file moves.
    env.run(steps.label_node, LabelInput(target=target, value=None))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))
    env.run(steps.run_host_command, HostCommandInput(target=target, name="rollback", image=IMAGE,
                                                     script=(
        "rm -f /etc/cni/net.d/05-cilium.conflist && mv /etc/cni/net.d/10-flannel.conflist"
        ".cilium_bak /etc/cni/net.d/10-flannel.conflist")))


def test_recycle_moves_pods_left_on_flannel_and_reports_unmanaged_ones(
        sandbox: Sandbox, steps: MigrationActivities, namespace: str,
        switching: NodeRef) -> None:
    env = ActivityEnvironment()
    target = switching
    pods = f"/api/v1/namespaces/{namespace}/pods"
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment("old", 1, node=target.node))
    sandbox.kube.create(pods, {"metadata": {"name": "stray", "labels": {"app": "stray"}}, "spec": {
        "nodeName": target.node, "containers": [{"name": "app", "image": "nginx"}]}})
    old = wait_for(lambda: ready_pods(sandbox, namespace, "app=old"), "old")[0]
    wait_for(lambda: ready_pods(sandbox, namespace, "app=stray"), "stray")
    # The node moves to Cilium; pods that were running keep their flannel address.
    env.run(steps.apply_node_config, NodeConfigInput(
        cluster=CLUSTER, namespace="kube-system", name="cilium-default",
        api_version="cilium.io/v2", defaults=NODE_CONFIG_DEFAULTS))
    env.run(steps.label_node, LabelInput(target=target))
    env.run(steps.restart_agent, RestartAgentInput(
        target=target, namespace="kube-system", timeout_seconds=30,
        not_before=datetime.now(UTC)))
    health = HealthInput(cluster=CLUSTER, cilium_namespace="kube-system",
                         cilium_pools=[CILIUM_POOL], flannel_namespace="kube-flannel",
                         flannel_daemonset="kube-flannel-ds")
    before = env.run(steps.check_health, health)

    result = env.run(steps.recycle_pods, RecycleInput(
        cluster=CLUSTER, cilium_pools=[CILIUM_POOL], timeout_seconds=30,
        namespaces=[namespace]))
    assert result.recycled == [f"{namespace}/{old['metadata']['name']}"]
    assert result.unmanaged == [f"{namespace}/stray"]
    assert sandbox.kube.get_or_none(f"{pods}/stray") is not None
    new = wait_for(lambda: ready_pods(sandbox, namespace, "app=old"), "the re-created pod")[0]
    assert ipaddress.ip_address(new["status"]["podIP"]) in ipaddress.ip_network(CILIUM_POOL)

    after = env.run(steps.check_health, health)
    assert after.nodes_on_cilium >= 1
    assert after.pods_on_cilium == before.pods_on_cilium + 1
    assert after.pods_total == before.pods_total
    # The sandbox is shared: judge the change, not whatever other tests left behind.
    assert (after.problems, after.flannel_ready) == (before.problems, before.flannel_ready)


def fake_flannel(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """What flannel's manifest installs, in a test namespace and with names of its own where
    they are cluster-wide; its DaemonSet runs nowhere."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = f"flannel-{namespace}"
    return [
        (f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "flannel"}}),
        (f"/api/v1/namespaces/{namespace}/configmaps",
         {"metadata": {"name": "kube-flannel-cfg"}, "data": {"net-conf.json": "{}"}}),
        (f"{rbac}/clusterroles", {"metadata": {"name": role}, "rules": []}),
        (f"{rbac}/clusterrolebindings", {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "flannel",
                          "namespace": namespace}]}),
        (f"/apis/apps/v1/namespaces/{namespace}/daemonsets", {
            "metadata": {"name": "kube-flannel-ds"},
            "spec": {"selector": {"matchLabels": {"app": "flannel"}}, "template": {
                "metadata": {"labels": {"app": "flannel"}},
                "spec": {"serviceAccountName": "flannel",
                         "nodeSelector": {"cilium-migrate.io/no-such-node": "true"},
                         "containers": [{"name": "kube-flannel", "image": "flannel"}],
                         "volumes": [{"name": "flannel-cfg",
                                      "configMap": {"name": "kube-flannel-cfg"}}]}}}}),
    ]


def test_remove_flannel_deletes_what_flannel_installed_and_nothing_more(
        sandbox: Sandbox, steps: MigrationActivities, namespace: str) -> None:
    for collection, body in fake_flannel(namespace):
        sandbox.kube.create(collection, body)
    env = ActivityEnvironment()
    request = RemoveFlannelInput(cluster=CLUSTER, namespace=namespace, daemonset="kube-flannel-ds")

    result = env.run(steps.remove_flannel, request)
    assert result.deleted == [
        f"DaemonSet {namespace}/kube-flannel-ds", f"ConfigMap {namespace}/kube-flannel-cfg",
        f"ClusterRoleBinding flannel-{namespace}", f"ClusterRole flannel-{namespace}",
        f"ServiceAccount {namespace}/flannel"]
    for collection, body in fake_flannel(namespace):
        assert sandbox.kube.get_or_none(f"{collection}/{body['metadata']['name']}") is None
    assert env.run(steps.remove_flannel, request).deleted == []
    # The real flannel, and the namespace it was asked about, are untouched.
    assert sandbox.kube.get_or_none("/apis/rbac.authorization.k8s.io/v1/clusterroles/flannel")
    assert sandbox.kube.get_or_none(f"/api/v1/namespaces/{namespace}")
