"""Discovery reads what is really there: flannel in both layouts, PDBs, policies, services."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from activities.discovery import discover_cluster
from activities.kubeapi import Kube
from plan.facts import ApiEndpoint
from sandbox import cluster
from sandbox.cluster import MANIFESTS
from tests.conftest import Sandbox
from tests.helpers import deployment, ready_pods, wait_for

pytestmark = pytest.mark.sandbox


def test_discovers_the_current_flannel_layout_and_the_cluster(
        sandbox: Sandbox, namespace: str) -> None:
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment("db", replicas=1))
    sandbox.kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "db"}}}})
    sandbox.kube.create(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", {
        "metadata": {"name": "deny-all"}, "spec": {"podSelector": {}}})
    wait_for(lambda: ready_pods(sandbox, namespace, "app=db"), "db")
    wait_for(lambda: sandbox.kube.get(
        f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/db-pdb"
    ).get("status", {}).get("expectedPods") == 1, "the PDB status")

    facts = discover_cluster(sandbox.kube, worker_node="worker-1")

    assert facts.flannel is not None
    assert (facts.flannel.namespace, facts.flannel.daemonset) == ("kube-flannel",
                                                                  "kube-flannel-ds")
    assert facts.flannel.network == ipaddress.ip_network("10.244.0.0/16")
    assert (facts.flannel.backend_type, facts.flannel.port, facts.flannel.vni) == ("vxlan",
                                                                                   8472, 1)
    assert [str(c) for c in facts.service_cidrs] == ["10.96.0.0/12"]
    assert facts.kube_proxy_present and facts.other_cnis == []
    names = {n.name: n for n in facts.nodes}
    assert set(names) == {n.name for n in sandbox.topology.nodes}
    assert names["cp-1"].control_plane and not names["worker-2"].control_plane
    assert names["worker-2"].zone in {"zone-a", "zone-b", "zone-c"}
    assert names["worker-2"].boot_id == sandbox.kube.get(
        "/api/v1/nodes/worker-2")["status"]["nodeInfo"]["bootID"]
    assert all(n.pod_cidrs and n.pod_cidrs[0].subnet_of(facts.flannel.network)
               for n in facts.nodes)
    assert f"{namespace}/deny-all" in {str(p) for p in facts.network_policies}
    pdb = next(p for p in facts.pdbs if p.namespace == namespace)
    assert (pdb.name, pdb.selector, pdb.disruptions_allowed, pdb.expected_pods) == (
        "db-pdb", "app=db", 0, 1)
    # Where nodes reach the API server, from kube-proxy's kubeconfig: not the client's 127.0.0.1.
    assert sandbox.topology.api_server is not None
    assert facts.api_endpoint == ApiEndpoint(host="192.0.2.10", source="kube-proxy",
                                             port=sandbox.topology.api_server.port)
    assert facts.api_endpoint_notes == [] and facts.worker_node == "worker-1"


def old_kube_system_flannel(tmp: Path) -> Path:
    """Flannel as older installs laid it out: kube-system, `cp -f` to install the CNI config."""
    documents = [d for d in yaml.safe_load_all((MANIFESTS / "kube-flannel.yml").read_text())
                 if d and d["kind"] != "Namespace"]
    for document in documents:
        if "namespace" in document["metadata"]:
            document["metadata"]["namespace"] = "kube-system"
        for subject in document.get("subjects", []):
            subject["namespace"] = "kube-system"
        if document["kind"] == "DaemonSet":
            document["metadata"]["name"] = "kube-flannel-ds-amd64"
            pod = document["spec"]["template"]["spec"]
            install = next(c for c in pod["initContainers"] if c["name"] == "install-cni")
            install["command"] = ["cp"]
            install["args"] = ["-f", "/etc/kube-flannel/cni-conf.json",
                               "/etc/cni/net.d/10-flannel.conflist"]
        if document["kind"] == "ConfigMap":
            document["data"]["net-conf.json"] = (
                '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 8472,'
                ' "VNI": 4096}}')
    path = tmp / "kube-flannel-old.yml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


@pytest.fixture(scope="module")
def old_layout_sandbox(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[Kube]:
    tmp = tmp_path_factory.mktemp("old-flannel")
    state_dir = tmp / "state"
    cluster.up(state_dir, nodes=2, control_planes=1,
               flannel_manifest=old_kube_system_flannel(tmp))
    try:
        yield Kube(str(state_dir / "kubeconfig"))
    finally:
        cluster.down(state_dir)


def test_discovers_flannel_in_the_older_kube_system_layout(old_layout_sandbox: Kube) -> None:
    facts = discover_cluster(old_layout_sandbox)
    assert facts.flannel is not None
    assert (facts.flannel.namespace, facts.flannel.daemonset) == ("kube-system",
                                                                  "kube-flannel-ds-amd64")
    assert (facts.flannel.port, facts.flannel.vni) == (8472, 4096)
    assert len(facts.nodes) == 2 and all(n.ready for n in facts.nodes)


def test_reports_another_cni_it_finds(sandbox: Sandbox) -> None:
    path = "/apis/apps/v1/namespaces/kube-system/daemonsets"
    sandbox.kube.create(path, {
        "metadata": {"name": "calico-node", "labels": {"k8s-app": "calico-node"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "calico-node"}},
                 "template": {"metadata": {"labels": {"k8s-app": "calico-node"}},
                              "spec": {"nodeSelector": {"no-such-node": "true"},
                                       "containers": [{"name": "calico-node",
                                                       "image": "calico/node:v3.30.0"}]}}}})
    try:
        assert discover_cluster(sandbox.kube).other_cnis == ["calico"]
    finally:
        sandbox.kube.delete(f"{path}/calico-node")
    assert discover_cluster(sandbox.kube).other_cnis == []
