"""DNS on the real-network sandbox: the real CoreDNS in its pods, kube-dns programmed by the
kube-proxy stand-in, and the kubelet's resolv.conf in every pod's namespace, queried with the
busybox 1.37 nslookup the product's probe runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from activities.kubeapi import Kube
from sandbox.nettools import busybox_path
from sandbox.network import netns
from sandbox.network.pod_dns import ETC_NETNS
from sandbox.topology import API_SERVICE_IP, CLUSTER_DNS_IP, Topology
from tests.helpers import wait_for

NAMESPACE = "dns-test"
KUBE_SYSTEM = "/api/v1/namespaces/kube-system"


def coredns_pods(kube: Kube) -> list[dict[str, Any]]:
    """Running CoreDNS pods with an address that the kube-dns EndpointSlice lists as ready."""
    pods = kube.get(f"{KUBE_SYSTEM}/pods", labelSelector="k8s-app=kube-dns")["items"]
    slices = kube.get("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
                      labelSelector="kubernetes.io/service-name=kube-dns")["items"]
    ready = {a for s in slices for e in s.get("endpoints") or []
             if (e.get("conditions") or {}).get("ready") for a in e.get("addresses") or []}
    return [p for p in pods if p.get("status", {}).get("podIP") in ready
            and not p["metadata"].get("deletionTimestamp")]


def client_pod(kube: Kube, node: str) -> str:
    """A plain pod on ``node`` (no process runs in it); returns its network namespace."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "metadata": {"name": "client"},
        "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}})
    wait_for(lambda: kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/client")["status"].get(
        "podIP"), "the client pod's address", 60)
    return str(kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/client")["metadata"]["uid"])


def nslookup(namespace: str, name: str) -> tuple[int, str]:
    result = netns.run_in(namespace, [str(busybox_path()), "nslookup", name], timeout=30)
    return result.returncode, result.stdout + result.stderr


def resolves(namespace: str, name: str, address: str) -> bool:
    code, output = nslookup(namespace, name)
    return code == 0 and f"Address: {address}" in output.split("Name:", 1)[-1]


def reboot(kube: Kube, node: str) -> None:
    """What the node-shell strategy does: a privileged host-PID pod that asks for a reboot."""
    kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "metadata": {"name": "reboot"},
        "spec": {"nodeName": node, "hostPID": True, "hostNetwork": True,
                 "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "shell", "image": "busybox:1.37.0",
                                 "command": ["nsenter", "--target", "1", "--", "reboot"],
                                 "securityContext": {"privileged": True}}]}})


def test_pods_resolve_service_names_through_coredns_also_after_it_moves(
        real_sandbox: tuple[Path, Kube]) -> None:
    state_dir, kube = real_sandbox
    topology = Topology.load(state_dir / "topology.json")
    assert topology.network is not None
    # One replica, so that DNS answers after the reboot only if the move was followed.
    kube.patch("/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale",
               {"spec": {"replicas": 1}})
    (coredns,) = wait_for(lambda: len(pods := coredns_pods(kube)) == 1 and pods,
                          "one ready CoreDNS pod", 120)
    dns_node = coredns["spec"]["nodeName"]
    other = next(n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]
                 if n["metadata"]["name"] != dns_node)
    uid = client_pod(kube, other)
    namespace = f"{topology.network.prefix}-pod-{uid}"

    # The kubelet's resolv.conf for a ClusterFirst pod, where `ip netns exec` mounts it.
    assert (ETC_NETNS / namespace / "resolv.conf").read_text() == (
        f"nameserver {CLUSTER_DNS_IP}\n"
        f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")

    wait_for(lambda: resolves(namespace, "kubernetes.default.svc.cluster.local", API_SERVICE_IP),
             "kubernetes.default.svc.cluster.local to resolve", 60)
    code, output = nslookup(namespace, "kubernetes.default.svc.cluster.local")
    assert f"Server:\t\t{CLUSTER_DNS_IP}" in output, output
    # busybox's nslookup asks for the name as given, never with the search list: the probe's
    # script tries `kubernetes.default.<search domain>` itself.
    code, output = nslookup(namespace, "kubernetes.default")
    assert code != 0 and f"Address: {API_SERVICE_IP}" not in output, output
    assert resolves(namespace, "kube-dns.kube-system.svc.cluster.local", CLUSTER_DNS_IP)

    reboot(kube, dns_node)
    (moved,) = wait_for(lambda: len(pods := [
        p for p in coredns_pods(kube)
        if p["status"]["podIP"] != coredns["status"]["podIP"]]) == 1 and pods,
        "CoreDNS back with a new address", 120)
    wait_for(lambda: resolves(namespace, "kubernetes.default.svc.cluster.local", API_SERVICE_IP),
             f"DNS through CoreDNS at {moved['status']['podIP']}", 60)

    kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/client")
    wait_for(lambda: not (ETC_NETNS / namespace).exists(), "the pod's resolv.conf to go", 60)
