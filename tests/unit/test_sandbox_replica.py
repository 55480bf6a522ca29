"""A sandbox shaped like a snapshot: its nodes, flannel settings and objects, checked without
starting one (the sandbox test builds a real one)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import yaml

from activities.snapshot import read_snapshot
from plan.snapshot import ClusterSnapshot, NamespaceShape, NodeShape, PriorityClassShape
from sandbox import cluster, replica
from sandbox.replica import (
    PLACEHOLDER_IMAGE,
    flannel_manifest,
    objects_to_create,
    populate,
    topology_of,
)
from sandbox.topology import ZONE_LABEL
from tests.fake_kube import FakeKube, pod
from tests.production_like import ENV_VALUE, production_like

TAKEN = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def snapshot() -> ClusterSnapshot:
    return read_snapshot(production_like(), "prod-eu", TAKEN)


def test_the_simulated_nodes_take_the_snapshots_names_zones_labels_taints_and_sizes() -> None:
    taken = snapshot()
    cordoned = taken.nodes[1].model_copy(update={"name": "w-9", "schedulable": False,
                                                 "zone": None, "labels": {}})
    taken = taken.model_copy(update={"nodes": [*taken.nodes, cordoned]})
    nodes = {n.name: n for n in topology_of(taken).nodes}
    assert list(nodes) == ["cp-1", "w-1", "w-2", "w-9"]
    assert len({n.internal_ip for n in nodes.values()}) == 4
    assert nodes["cp-1"].control_plane and nodes["cp-1"].taints() == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert nodes["w-2"].taints() == [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]
    assert nodes["w-1"].taints() == []  # not the default control-plane taint either
    labels = nodes["w-2"].labels()
    assert labels[ZONE_LABEL] == "eu-1b" and labels["pool"] == "general"
    assert labels["kubernetes.io/hostname"] == "w-2"
    assert ZONE_LABEL not in nodes["w-9"].labels()  # no zone in the cluster, none here
    assert nodes["w-1"].allocatable == {"cpu": "3800m", "memory": "15Gi", "pods": "110"}


def test_state_taints_are_left_to_the_control_plane() -> None:
    taken = snapshot()
    node = NodeShape.model_validate({"name": "w-5", "taints": [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        {"key": "gpu", "effect": "NoExecute"}]})
    [spec] = topology_of(taken.model_copy(update={"nodes": [node]})).nodes
    assert spec.taints() == [{"key": "gpu", "effect": "NoExecute"}]


def test_flannel_runs_with_the_snapshots_backend_on_every_node() -> None:
    documents = list(yaml.safe_load_all(flannel_manifest(
        snapshot(), cluster.MANIFESTS / "kube-flannel.yml")))
    [config] = [d for d in documents if d and d["kind"] == "ConfigMap"]
    net_conf = json.loads(config["data"]["net-conf.json"])
    assert net_conf["Backend"] == {"Type": "vxlan", "Port": 8473, "VNI": 1}
    assert net_conf["Network"] == "10.244.0.0/16"
    [daemonset] = [d for d in documents if d and d["kind"] == "DaemonSet"]
    assert daemonset["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_the_objects_keep_the_scheduling_shape_and_run_a_placeholder() -> None:
    taken = snapshot()
    taken = taken.model_copy(update={"priority_classes": [
        *taken.priority_classes, PriorityClassShape(name="system-node-critical", value=1)]})
    created = objects_to_create(taken)
    kinds = [(obj["kind"], obj["metadata"]["name"]) for _, obj in created]
    # Namespaces first, the API server's own PriorityClass and flannel's DaemonSet left out.
    assert kinds == [("Namespace", "shop"), ("PriorityClass", "business"),
                     ("PodDisruptionBudget", "db-pdb"), ("Deployment", "web"),
                     ("StatefulSet", "db")]
    web = next(obj for _, obj in created if obj["kind"] == "Deployment")
    pod = web["spec"]["template"]["spec"]
    assert web["spec"]["replicas"] == 3 and pod["terminationGracePeriodSeconds"] == 45
    assert pod["nodeSelector"] == {"pool": "general"} and "podAntiAffinity" in pod["affinity"]
    assert pod["containers"] == [{"name": "web", "image": PLACEHOLDER_IMAGE, "resources": {
        "requests": {"cpu": "500m", "memory": "1Gi"}}}]
    assert ENV_VALUE not in json.dumps([obj for _, obj in created])
    pdb = next(obj for _, obj in created if obj["kind"] == "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 2}


def test_populating_cordons_what_was_cordoned_and_keeps_what_the_sandbox_has() -> None:
    taken = snapshot()
    nodes = [n.model_copy(update={"schedulable": n.name != "w-1"}) for n in taken.nodes]
    taken = taken.model_copy(update={"nodes": nodes})
    sandbox = FakeKube()
    sandbox.add("/api/v1/nodes", {"metadata": {"name": "w-1"}, "spec": {}})
    sandbox.add("/api/v1/namespaces", {"metadata": {"name": "shop"}})
    sandbox.add("/apis/apps/v1/namespaces/shop/statefulsets", {"metadata": {"name": "db"}})
    kept = populate(sandbox, taken)
    assert sandbox.get("/api/v1/nodes/w-1")["spec"]["unschedulable"] is True
    assert kept == ["StatefulSet shop/db already exists in the sandbox and was kept as it is"]
    assert sandbox.get("/apis/apps/v1/namespaces/shop/deployments/web")["spec"]["replicas"] == 3


def test_pod_security_levels_are_not_copied_so_the_placeholders_may_run() -> None:
    taken = snapshot()
    taken = taken.model_copy(update={"namespaces": [NamespaceShape(name="shop", labels={
        "team": "a", "pod-security.kubernetes.io/enforce": "restricted"})]})
    [(_, namespace)] = [c for c in objects_to_create(taken) if c[1]["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"] == {"team": "a"}


def test_placing_waits_for_pods_still_unplaced_and_returns_once_all_stay_settled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(replica.time, "sleep", sleeps.append)
    sandbox = FakeKube()
    sandbox.add("/api/v1/namespaces/shop/pods", pod("web-1", phase="Running"))
    refused = pod("db-0", phase="Pending")
    refused["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                        "reason": "Unschedulable", "message": "0/4 nodes"}]
    sandbox.add("/api/v1/namespaces/shop/pods", refused)
    replica.wait_until_placed(sandbox, timeout=5.0)
    assert len(sleeps) == 3  # the first look, then three looks that saw the same pods
    assert replica.unschedulable_pods(sandbox) == ["shop/db-0: 0/4 nodes"]

    sandbox.add("/api/v1/namespaces/shop/pods", pod("web-2", phase="Pending"))
    started = time.monotonic()
    replica.wait_until_placed(sandbox, timeout=0.2)  # never settles: gives up at the deadline
    assert time.monotonic() - started >= 0.2
