"""A rehearsal's snapshot: what it reads from a cluster, what it must never hold (Secrets,
ConfigMap data, env values), and how it refuses a file it cannot use."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from activities.snapshot import read_snapshot
from plan.snapshot import ClusterSnapshot, dump_snapshot, load_snapshot
from plan.spec_loader import SpecError
from tests.fake_kube import FakeKube
from tests.production_like import CONFIG_VALUE, ENV_VALUE, SECRET_VALUE, production_like

TAKEN = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def test_the_snapshot_holds_nodes_workloads_pdbs_and_flannel_as_the_cluster_has_them() -> None:
    snapshot = read_snapshot(production_like(), "prod-eu", TAKEN)
    nodes = {n.name: n for n in snapshot.nodes}
    assert nodes["cp-1"].control_plane and nodes["w-2"].zone == "eu-1b"
    assert [(t.key, t.value, t.effect) for t in nodes["w-2"].taints] == [
        ("dedicated", "db", "NoSchedule")]
    assert nodes["w-1"].labels["pool"] == "general"
    assert nodes["w-1"].allocatable == {"cpu": "3800m", "memory": "15Gi", "pods": "110"}
    assert snapshot.flannel is not None and snapshot.flannel.port == 8473
    assert [ns.name for ns in snapshot.namespaces] == ["shop"]
    workloads = {str(w): w for w in snapshot.workloads}
    # The Deployment's own ReplicaSet is left to the Deployment.
    assert sorted(workloads) == ["DaemonSet kube-flannel/kube-flannel-ds",
                                 "Deployment shop/web", "StatefulSet shop/db"]
    web = workloads["Deployment shop/web"].pod
    assert workloads["Deployment shop/web"].replicas == 3
    assert web.node_selector == {"pool": "general"} and web.tolerations[0]["value"] == "db"
    assert web.affinity is not None and "podAntiAffinity" in web.affinity
    assert web.topology_spread_constraints[0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert web.termination_grace_period_seconds == 45
    assert web.priority_class_name == "business"
    assert web.containers[0].requests == {"cpu": "500m", "memory": "1Gi"}
    assert [(str(p), p.min_available) for p in snapshot.pdbs] == [("shop/db-pdb", 2)]
    assert [(p.name, p.value) for p in snapshot.priority_classes] == [("business", 1000)]


@pytest.mark.parametrize("file_format", ["yaml", "json"])
def test_the_written_snapshot_holds_no_secret_configmap_data_or_env_value(
        file_format: str) -> None:
    kube = production_like()
    text = dump_snapshot(read_snapshot(kube, "prod-eu", TAKEN), file_format)  # type: ignore[arg-type]
    for leaked in (SECRET_VALUE, ENV_VALUE, CONFIG_VALUE, "DATABASE_URL", "registry-credentials",
                   "secretName", "last-applied-configuration", "registry.example/web"):
        assert leaked not in text
    # Nor was any Secret or ConfigMap listed: only flannel's own ConfigMap was read, by name.
    asked = [path for method, path, _ in kube.requests if method == "GET"]
    assert not [p for p in asked if "secrets" in p]
    assert [p for p in asked if "configmaps" in p and "kube-flannel-cfg" not in p] == [
        p for p in asked if p.endswith(("/kube-proxy", "/cluster-info"))]


@pytest.mark.parametrize("file_format", ["yaml", "json"])
def test_a_written_snapshot_reads_back_the_same(file_format: str) -> None:
    snapshot = read_snapshot(production_like(), "prod-eu", TAKEN)
    again = load_snapshot(dump_snapshot(snapshot, file_format), "snap")  # type: ignore[arg-type]
    assert again == snapshot


@pytest.mark.parametrize(("text", "expected"), [
    ("", "the file is empty"),
    ("[1, 2]", "the top level must be a mapping, not a list"),
    ("{version: [", "neither YAML nor JSON"),
    ("version: 7\ncluster: x\ntaken_at: 2026-01-01T00:00:00Z\n",
     "version 7 is not one this cilium-migrate reads"),
    ("version: 1\ntaken_at: 2026-01-01T00:00:00Z\n", "cluster: required, but missing"),
    ("version: 1\ncluster: x\ntaken_at: 2026-01-01T00:00:00Z\nnodes: [{name: a, zoen: b}]\n",
     "nodes[0].zoen"),
])
def test_a_bad_snapshot_file_is_refused_with_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        load_snapshot(text, "snap.yaml")
    assert "snap.yaml: invalid cluster snapshot" in str(raised.value)
    assert expected in str(raised.value)


def test_an_empty_cluster_makes_a_valid_empty_snapshot() -> None:
    snapshot = read_snapshot(FakeKube(), "empty", TAKEN)
    assert snapshot == ClusterSnapshot(cluster="empty", taken_at=TAKEN,
                                       server_version="v1.35.4")
