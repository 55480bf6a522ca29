"""DNS pieces of the real-network sandbox that need no namespace: the kubelet's resolv.conf,
kube-proxy's reading of Services and EndpointSlices, the CoreDNS build's main package and the
Corefile the sandbox ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.nettools import COREDNS_PLUGINS, coredns_main
from sandbox.network.coredns import is_coredns, with_kubeconfig
from sandbox.network.pod_dns import remove_resolv_conf, resolv_conf, write_resolv_conf
from sandbox.network.service_proxy import ServicePort, service_ports
from sandbox.toolchain import ToolchainError
from sandbox.topology import CLUSTER_DNS_IP

ADDONS = Path(__file__).parents[2] / "sandbox" / "manifests" / "cluster-addons.yaml"
CLUSTER_FIRST = ("nameserver 10.96.0.10\n"
                 "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
                 "options ndots:5\n")


# ---- the kubelet's resolv.conf ----------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ({}, CLUSTER_FIRST),
    ({"dnsPolicy": "ClusterFirst"}, CLUSTER_FIRST),
    ({"dnsPolicy": "ClusterFirst", "hostNetwork": True}, None),  # the node's
    ({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True}, CLUSTER_FIRST),
    ({"dnsPolicy": "Default"}, None),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.example"],
                                         "options": [{"name": "ndots", "value": "2"}]}},
     "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2\n"),
    ({"dnsConfig": {"searches": ["svc.cluster.local", "corp.example"],
                    "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}},
     "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local "
     "corp.example\noptions ndots:1 edns0\n"),
])
def test_resolv_conf_is_the_kubelets(spec: dict[str, Any], expected: str | None) -> None:
    assert resolv_conf(spec, "shop") == expected


def test_resolv_conf_lives_where_ip_netns_exec_mounts_it(tmp_path: Path) -> None:
    path = write_resolv_conf("cm1234-pod-u1", CLUSTER_FIRST, root=tmp_path)
    assert path == tmp_path / "cm1234-pod-u1" / "resolv.conf"
    assert path.read_text() == CLUSTER_FIRST
    remove_resolv_conf("cm1234-pod-u1", root=tmp_path)
    remove_resolv_conf("cm1234-pod-u1", root=tmp_path)  # already gone: no error
    assert list(tmp_path.iterdir()) == []


# ---- kube-proxy: Services and EndpointSlices to ServicePorts ----------------------------------

def _service(namespace: str, name: str, cluster_ip: str, ports: list[dict[str, Any]],
             **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": cluster_ip, "ports": ports, **spec}}


def _slice(namespace: str, service: str, ports: list[dict[str, Any]],
           endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"{service}-x",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}


DNS_PORTS = [{"name": "dns", "port": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]


def test_kube_dns_gets_its_ready_endpoints_per_port_and_protocol() -> None:
    services = [
        _service("default", "kubernetes", "10.96.0.1",
                 [{"name": "https", "port": 443, "protocol": "TCP"}]),
        _service("kube-system", "kube-dns", CLUSTER_DNS_IP, DNS_PORTS),
        _service("kube-system", "headless", "None", DNS_PORTS),
        _service("shop", "sctp", "10.96.0.40", [{"port": 9, "protocol": "SCTP"}]),
        _service("shop", "web", "10.96.0.41", [{"port": 80}]),
    ]
    slices = [
        _slice("default", "kubernetes", [{"name": "https", "port": 6443, "protocol": "TCP"}],
               [{"addresses": ["198.18.0.1"]}]),
        _slice("kube-system", "kube-dns", DNS_PORTS, [
            {"addresses": ["10.244.1.2"], "conditions": {"ready": True}},
            {"addresses": ["10.244.2.2"], "conditions": {"ready": False}},
            {"addresses": ["10.244.3.2"]}]),  # unset counts as ready
        _slice("shop", "web", [{"port": 8080}], [{"addresses": ["10.244.1.9"]}]),
    ]
    assert service_ports(services, slices) == [
        ServicePort("default/kubernetes:https", "10.96.0.1", 443, "tcp", [("198.18.0.1", 6443)]),
        ServicePort("kube-system/kube-dns:dns", CLUSTER_DNS_IP, 53, "udp",
                    [("10.244.1.2", 53), ("10.244.3.2", 53)]),
        ServicePort("kube-system/kube-dns:dns-tcp", CLUSTER_DNS_IP, 53, "tcp",
                    [("10.244.1.2", 53), ("10.244.3.2", 53)]),
        ServicePort("shop/web", "10.96.0.41", 80, "tcp", [("10.244.1.9", 8080)]),
    ]


def test_a_service_without_slices_has_no_endpoints() -> None:
    services = [_service("kube-system", "kube-dns", CLUSTER_DNS_IP, DNS_PORTS)]
    assert [p.endpoints for p in service_ports(services, [])] == [[], []]


# ---- CoreDNS: its build and its Corefile ------------------------------------------------------

UPSTREAM_ORDER = ["root", "reload", "ready", "health", "prometheus", "errors", "log",
                  "loadbalance", "cache", "kubernetes", "loop", "forward"]
PACKAGES = {d: f"github.com/coredns/coredns/plugin/{'metrics' if d == 'prometheus' else d}"
            for d in UPSTREAM_ORDER}


def test_the_main_package_imports_only_the_sandboxs_plugins_in_upstreams_order() -> None:
    main = coredns_main(UPSTREAM_ORDER, PACKAGES)
    assert 'dnsserver.Directives = []string{\n\t\t"reload",\n\t\t"ready",\n\t\t"health",\n' \
        '\t\t"prometheus",\n\t\t"errors",\n\t\t"loadbalance",\n\t\t"cache",\n' \
        '\t\t"kubernetes",\n\t}' in main
    assert '_ "github.com/coredns/coredns/plugin/metrics"' in main
    assert "forward" not in main and "loop" not in main
    assert "coremain.Run()" in main


def test_a_plugin_missing_upstream_stops_the_build() -> None:
    with pytest.raises(ToolchainError, match="no plugin kubernetes"):
        coredns_main([d for d in UPSTREAM_ORDER if d != "kubernetes"], PACKAGES)


def _addons() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(ADDONS.read_text()) if d]


def test_the_corefile_uses_only_compiled_plugins_and_kube_dns_is_the_kubelets_cluster_dns(
        ) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _addons()}
    corefile = docs[("ConfigMap", "coredns")]["data"]["Corefile"]
    server_block = corefile.split("{", 1)[1]
    directives = {line.split()[0] for line in server_block.splitlines()
                  if line.startswith("    ") and not line.startswith("     ") and line.split()
                  and line.split()[0] != "}"}
    assert directives == set(COREDNS_PLUGINS)
    assert docs[("Service", "kube-dns")]["spec"]["clusterIP"] == CLUSTER_DNS_IP
    template = docs[("Deployment", "coredns")]["spec"]["template"]["spec"]
    assert template["dnsPolicy"] == "Default"  # as kubeadm's: CoreDNS does not ask itself
    assert is_coredns(template["containers"][0])


def test_the_kubeconfig_goes_into_the_kubernetes_block() -> None:
    corefile = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa {\n" \
               "       pods insecure\n    }\n}\n"
    assert with_kubeconfig(corefile, "/n/kc") == (
        ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa {\n"
        "        kubeconfig /n/kc\n       pods insecure\n    }\n}\n")
    assert with_kubeconfig("x:53 {\n  kubernetes cluster.local\n}\n", "/n/kc") == (
        "x:53 {\n  kubernetes cluster.local {\n      kubeconfig /n/kc\n  }\n}\n")
