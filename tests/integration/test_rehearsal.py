"""Rehearsals end to end (issue 16): a sandbox plays the production cluster, its snapshot is
rehearsed in a second sandbox by `cilium-migrate rehearse --snapshot`, and the report names
what would block the migration, with the exact objects, or says go.

The "production" sandbox has a zone of one node (zone-b: w-3) and a PDB that allows no
disruption now (shop/db-pdb, minAvailable 2: db has 3 replicas, one per node labelled db=true,
and only w-1 and w-2 are, so one stays Pending). Preflight only warns about such a PDB (a
never-evictable one stops the run there), so the rehearsal meets it at a drain. The sandbox is
stopped once its snapshot is taken, so the machine runs one sandbox at a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.kubeapi import Kube
from activities.snapshot import read_snapshot
from client import exit_codes
from plan.snapshot import ClusterSnapshot, dump_snapshot, load_snapshot
from sandbox import cluster, replica
from sandbox.toolchain import Toolchain, print_progress
from sandbox.topology import ZONE_LABEL, NodeSpec, Topology, node_address
from tests.conftest import CHART, REPO
from tests.helpers import wait_for

pytestmark = pytest.mark.sandbox

CLUSTER = "rehearsed"
ONE_PER_DB_NODE = {
    "nodeSelector": {"pool": "general", "db": "true"},
    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"app": "db"}}}]}},
}


def production_topology() -> Topology:
    shape = [("cp-1", "zone-a", True), ("w-1", "zone-a", False), ("w-2", "zone-a", False),
             ("w-3", "zone-b", False)]
    return Topology(nodes=[NodeSpec(
        name=name, internal_ip=node_address(index), zone=zone, control_plane=cp,
        extra_labels={} if cp else {"pool": "general",
                                    **({"db": "true"} if name in ("w-1", "w-2") else {})},
        capacity={"cpu": "4", "memory": "16Gi", "pods": "110"})
        for index, (name, zone, cp) in enumerate(shape)])


def app(name: str, replicas: int, pdb: dict[str, Any],
        placement: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 5, "nodeSelector": {"pool": "general"},
                     **(placement or {}),
                     "containers": [{"name": name, "image": "nginx:1.27", "env": [
                         {"name": "PASSWORD", "value": "not-in-any-snapshot"}],
                         "resources": {"requests": {"cpu": "100m"}}}]}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": f"{name}-pdb", "namespace": "shop"},
         "spec": {"selector": {"matchLabels": labels}, **pdb}}]


@pytest.fixture(scope="module")
def production(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
               ) -> ClusterSnapshot:
    """The snapshot of the "production" sandbox, taken once its pods run."""
    state_dir = tmp_path_factory.mktemp("production") / "state"
    cluster.up(state_dir, nodes=0, topology=production_topology(), cluster_name=CLUSTER,
               progress=print_progress)
    try:
        documents = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                     *app("db", 3, {"minAvailable": 2}, ONE_PER_DB_NODE),
                     *app("web", 3, {"maxUnavailable": 1})]
        manifest = state_dir / "apps.yaml"
        manifest.write_text(yaml.safe_dump_all(documents))
        cluster.kubectl(toolchain, state_dir, "apply", "-f", str(manifest))
        kube = Kube(str(state_dir / "kubeconfig"))
        wait_for(lambda: len([p for p in kube.get("/api/v1/namespaces/shop/pods")["items"]
                              if p.get("status", {}).get("phase") == "Running"]) == 5,
                 "the shop's 5 pods running (db's third has no node)", timeout=120)
        return read_snapshot(kube, CLUSTER, datetime.now(UTC))
    finally:
        cluster.down(state_dir)


def spec_file(directory: Path) -> Path:
    """As an operator writes it: a kubeconfig context and named approvers, neither of which
    the rehearsal may need changed beyond letting "rehearsal" approve."""
    path = directory / "migration.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": {"name": CLUSTER, "kubeconfigContext": "prod-eu"},
        "cilium": {"chart": {"path": str(CHART)}},
        "rollout": {"maxUnavailable": 1},
        "approvals": {"policy": "per-wave", "approvers": ["alice"]},
        "drain": {"timeout": "20s"},
        "reboot": {"timeout": "5m"},
    }))
    return path


def rehearse(snapshot: ClusterSnapshot, directory: Path) -> tuple[int, dict[str, Any]]:
    saved = directory / "snapshot.yaml"
    saved.write_text(dump_snapshot(snapshot, "yaml"))
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", "rehearse", "-f", str(spec_file(directory)),
         "--snapshot", str(saved), "--dir", str(directory / "run"), "--port", "7291",
         "--reboot-duration", "120", "-o", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert "Traceback" not in result.stderr, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def test_the_copy_has_the_clusters_nodes_and_objects(production: ClusterSnapshot,
                                                     tmp_path: Path) -> None:
    assert "not-in-any-snapshot" not in dump_snapshot(production, "yaml")
    copy = replica.build(tmp_path, load_snapshot(dump_snapshot(production, "yaml")))
    try:
        kube = Kube(str(copy.kubeconfig))
        nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes")["items"]}
        assert sorted(nodes) == ["cp-1", "w-1", "w-2", "w-3"]
        assert nodes["w-3"]["metadata"]["labels"][ZONE_LABEL] == "zone-b"
        assert nodes["w-1"]["metadata"]["labels"]["pool"] == "general"
        assert nodes["w-1"]["status"]["capacity"]["cpu"] == "4"
        assert [t["key"] for t in nodes["cp-1"]["spec"]["taints"]] == [
            "node-role.kubernetes.io/control-plane"]
        wait_for(lambda: (kube.get("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/"
                                   "db-pdb").get("status") or {}).get("currentHealthy") == 2,
                 "db-pdb counting both db pods")
        pdb = kube.get("/apis/policy/v1/namespaces/shop/poddisruptionbudgets/db-pdb")
        assert pdb["status"]["disruptionsAllowed"] == 0
        [unplaced] = copy.unschedulable_before
        assert unplaced.startswith("shop/db-")
    finally:
        cluster.down(copy.state_dir)


def test_a_blocking_pdb_and_a_zone_of_one_node_make_a_no_go_naming_both(
        production: ClusterSnapshot, tmp_path: Path) -> None:
    code, report = rehearse(production, tmp_path)

    assert code == exit_codes.BLOCKED and report["verdict"] == "no-go", report
    met = {(b["kind"], b["object"]) for b in report["blockers"]}
    assert report["phase"] == "cancelled", report  # stopped: the skipped nodes hold finalize
    assert ("pdb", "shop/db-pdb") in met, report["blockers"]
    assert ("zone-emptied", "zone-b") in met, report["blockers"]
    assert any("'rehearsal'" in note for note in report["notes"])


def test_a_healthy_snapshot_rehearses_to_a_clean_go(production: ClusterSnapshot,
                                                   tmp_path: Path) -> None:
    nodes = [n.model_copy(update={"zone": "zone-a", "labels": {**n.labels, ZONE_LABEL: "zone-a"}})
             for n in production.nodes]
    healthy = production.model_copy(update={
        "nodes": nodes, "pdbs": [p for p in production.pdbs if p.name != "db-pdb"],
        "workloads": [w for w in production.workloads if w.name != "db"]})

    code, report = rehearse(healthy, tmp_path)

    assert (code, report["verdict"], report["blockers"]) == (exit_codes.OK, "go", []), report
    assert report["phase"] == "completed"
    assert sorted(n for w in report["waves"] for n in w["nodes"]) == ["cp-1", "w-1", "w-2", "w-3"]
    assert all(w["predicted"] for w in report["waves"])

