"""The sandbox's control plane is the real thing: evictions, PDBs, DaemonSets, node IPAM."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.conftest import CHART, Sandbox
from tests.helpers import deployment, evict, ready_pods, wait_for

pytestmark = pytest.mark.sandbox


def test_eviction_is_refused_by_a_pdb_until_the_workload_scales_up(
        sandbox: Sandbox, namespace: str) -> None:
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment("db", replicas=1))
    sandbox.kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})
    pod = wait_for(lambda: ready_pods(sandbox, namespace, "app=db"), "db ready")[0]
    pdb_path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/db-pdb"
    wait_for(lambda: sandbox.kube.get(pdb_path).get("status", {}).get("currentHealthy") == 1,
             "the disruption controller to count the pod")

    with pytest.raises(ApiException) as refused:
        evict(sandbox, namespace, pod["metadata"]["name"])
    assert refused.value.status == 429

    sandbox.kube.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/db",
                       {"spec": {"replicas": 2}})
    wait_for(lambda: sandbox.kube.get(pdb_path)["status"].get("disruptionsAllowed") == 1,
             "the PDB to allow one disruption")
    evict(sandbox, namespace, pod["metadata"]["name"])  # no exception: accepted
    wait_for(lambda: sandbox.kube.get_or_none(
        f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}") is None,
        "the evicted pod to go away")


def test_a_deleted_daemonset_pod_is_recreated_on_its_node(sandbox: Sandbox) -> None:
    node = sandbox.workers()[-1]
    def proxy_pod() -> dict[str, Any] | None:
        pods = sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                                labelSelector="k8s-app=kube-proxy",
                                fieldSelector=f"spec.nodeName={node}")["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and p["status"].get("phase") == "Running"]
        return live[0] if live else None

    old = wait_for(proxy_pod, "kube-proxy on the node")
    sandbox.kube.delete(f"/api/v1/namespaces/kube-system/pods/{old['metadata']['name']}")
    new = wait_for(lambda: (p := proxy_pod()) and p["metadata"]["uid"] != old["metadata"]["uid"]
                   and p, "the DaemonSet controller to re-create the pod")
    assert new["spec"]["nodeName"] == node
    assert new["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"


def test_pods_on_flannel_nodes_get_ips_from_their_node_pod_cidr(
        sandbox: Sandbox, namespace: str) -> None:
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment("web", replicas=6))
    pods = wait_for(lambda: len(p := ready_pods(sandbox, namespace, "app=web")) == 6 and p,
                    "six web pods")
    node_cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"]
                  for n in sandbox.kube.get("/api/v1/nodes")["items"]}
    # Other tests move some of the shared sandbox's nodes to Cilium; judge the flannel ones.
    on_flannel = [p for p in pods if sandbox.active_cni(p["spec"]["nodeName"]) ==
                  "10-flannel.conflist"]
    assert on_flannel
    for pod in on_flannel:
        cidr = ipaddress.ip_network(node_cidrs[pod["spec"]["nodeName"]])
        assert cidr.subnet_of(ipaddress.ip_network("10.244.0.0/16"))
        assert ipaddress.ip_address(pod["status"]["podIP"]) in cidr
    assert len({p["status"]["podIP"] for p in pods}) == 6


def test_the_real_crd_rejects_a_ciliumnodeconfig_without_node_selector(
        sandbox: Sandbox, cilium: None) -> None:
    with pytest.raises(ApiException) as rejected:
        sandbox.kube.create("/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNodeConfig",
            "metadata": {"name": "no-selector"},
            "spec": {"defaults": {"cni-exclusive": "true"}}})
    assert rejected.value.status == 422
    assert "nodeSelector" in json.loads(rejected.value.body)["message"]


def test_helm_rejects_what_the_real_chart_schema_rejects(sandbox: Sandbox, cilium: None) -> None:
    result = sandbox.helm("install", "bad-cilium", str(CHART), "-n", "default",
                          "--set", "tunnelPort=abc", check=False)
    assert result.returncode != 0
    assert "tunnelPort" in result.stderr and "schema" in result.stderr


def test_helm_install_with_the_article_values_configures_tunnel_port_8473(
        sandbox: Sandbox, cilium: None) -> None:
    config = sandbox.kube.get("/api/v1/namespaces/kube-system/configmaps/cilium-config")["data"]
    assert config["tunnel-port"] == "8473"
    assert config["custom-cni-conf"] == "true"
    assert config["cluster-pool-ipv4-cidr"] == "10.245.0.0/16"
    agents = sandbox.kube.get("/apis/apps/v1/namespaces/kube-system/daemonsets/cilium")
    assert agents["status"]["desiredNumberScheduled"] == len(sandbox.topology.nodes)

