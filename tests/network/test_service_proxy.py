"""The kube-proxy stand-in on real namespaces: a node's host and its pod reach a TCP server
through the ``kubernetes`` Service's ClusterIP once the Service is programmed, and not before."""

from __future__ import annotations

import os
import shutil

import pytest

from sandbox.network.netns import ip
from sandbox.network.service_proxy import (
    ServicePort,
    clear_services,
    endpoint_chain,
    program_services,
    service_chain,
)
from tests.network.two_nodes import Lab, lab, run, tcp_get, tcp_server, udp_get, udp_server

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="iptables not installed"),
]

CLUSTER_IP, SERVICE_PORT = "10.96.0.1", 443
API = ("198.18.200.9", 7443)
KUBERNETES = "default/kubernetes:https"
SVC = "KUBE-SVC-NPX46M4PTMTKRN6Y"  # what every kubeadm node calls default/kubernetes:https


def _program_kubernetes(namespace: str, endpoints: list[tuple[str, int]]) -> None:
    program_services(namespace, [ServicePort(KUBERNETES, CLUSTER_IP, SERVICE_PORT, "tcp",
                                             endpoints)])


def _node_pod_and_server(net: Lab) -> tuple[str, str, str]:
    """Node ``a`` with a pod, and the API server's node ``x``. The underlay routes the pod
    CIDR to its node (nothing masquerades pod traffic here) and has no route for the Service
    range, so an unprogrammed ClusterIP fails at once."""
    node = net.node("a", "198.18.200.2")
    pod = net.pod(node, "pa", "10.245.1.5", "10.245.1.1", "lxca")
    server = net.node("x", API[0])
    ip("route", "add", "10.245.1.0/24", "via", "198.18.200.2", netns=net.underlay)
    ip("route", "add", "unreachable", "10.96.0.0/12", netns=net.underlay)
    return node, pod, server


def _nat(namespace: str) -> list[str]:
    return [line for line in run(["iptables-save", "-t", "nat"], namespace).splitlines()
            if line.startswith(("-A", ":KUBE"))]


def test_chain_names_are_kube_proxys() -> None:
    assert service_chain("default/kubernetes:https") == SVC
    # kube-dns's ports, as `iptables-save` shows them on any kubeadm node
    assert service_chain("kube-system/kube-dns:dns", "udp") == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert service_chain("kube-system/kube-dns:dns-tcp", "tcp") == "KUBE-SVC-ERIFXISQEP7F7OF4"
    sep = endpoint_chain("default/kubernetes:https", "198.18.200.9:7443")
    assert sep.startswith("KUBE-SEP-") and len(sep) == 25
    assert sep != endpoint_chain("default/kubernetes:https", "198.18.200.10:7443")


def test_the_node_and_its_pod_reach_the_api_server_through_the_cluster_ip() -> None:
    with lab() as net:
        node, pod, server = _node_pod_and_server(net)

        with tcp_server(server, *API):
            assert tcp_get(node, *API) == "apiserver"
            assert tcp_get(pod, *API) == "apiserver"
            assert tcp_get(node, CLUSTER_IP, SERVICE_PORT).startswith("error: No route")
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT).startswith("error: No route")

            _program_kubernetes(node, [API])
            assert tcp_get(node, CLUSTER_IP, SERVICE_PORT) == "apiserver"  # OUTPUT
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT) == "apiserver"  # PREROUTING

            clear_services(node)
            assert _nat(node) == []
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT).startswith("error: No route")


def test_programming_rebuilds_the_chains_in_kube_proxys_layout() -> None:
    with lab() as net:
        node = net.node("a", "198.18.200.2")
        clear_services(node)  # nothing there yet: no error
        one = endpoint_chain("default/kubernetes:https", "198.18.200.9:7443")
        two = endpoint_chain("default/kubernetes:https", "198.18.200.10:7443")

        _program_kubernetes(node, [API])
        _program_kubernetes(node, [API])
        assert sorted(_nat(node)) == sorted([
            ":KUBE-SERVICES - [0:0]",
            f":{SVC} - [0:0]",
            f":{one} - [0:0]",
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment '
            f'"default/kubernetes:https cluster IP" -m tcp --dport 443 -j {SVC}',
            f'-A {SVC} -m comment --comment "default/kubernetes:https -> 198.18.200.9:7443" '
            f"-j {one}",
            f'-A {one} -p tcp -m comment --comment "default/kubernetes:https" -m tcp '
            "-j DNAT --to-destination 198.18.200.9:7443",
        ])

        _program_kubernetes(node, [("198.18.200.10", 7443), API])
        svc_rules = [line for line in _nat(node) if line.startswith(f"-A {SVC}")]
        assert svc_rules == [
            f'-A {SVC} -m comment --comment "default/kubernetes:https -> 198.18.200.9:7443" '
            f"-m statistic --mode random --probability 0.50000000000 -j {one}",
            f'-A {SVC} -m comment --comment "default/kubernetes:https -> 198.18.200.10:7443" '
            f"-j {two}",
        ]

        _program_kubernetes(node, [("198.18.200.10", 7443)])
        chains = sorted(line for line in _nat(node) if line.startswith(":"))
        assert chains == sorted([":KUBE-SERVICES - [0:0]", f":{SVC} - [0:0]", f":{two} - [0:0]"])

        _program_kubernetes(node, [])
        assert [line for line in _nat(node) if "KUBE" in line and "portals" not in line] == [
            ":KUBE-SERVICES - [0:0]"]
        clear_services(node)
        clear_services(node)
        assert _nat(node) == []


DNS_IP = "10.96.0.10"
DNS = ("198.18.200.9", 5353)  # the endpoint on another port than the Service's, as a DNAT shows


def test_several_services_over_udp_and_tcp_in_one_sync() -> None:
    """kube-dns beside kubernetes: its UDP port reaches a UDP endpoint from the pod, each
    Service keeps its own chains, and a sync without a Service removes its rules."""
    with lab() as net:
        node, pod, server = _node_pod_and_server(net)
        kubernetes = ServicePort(KUBERNETES, CLUSTER_IP, SERVICE_PORT, "tcp", [API])
        dns = ServicePort("kube-system/kube-dns:dns", DNS_IP, 53, "udp", [DNS])
        dns_tcp = ServicePort("kube-system/kube-dns:dns-tcp", DNS_IP, 53, "tcp", [])

        with tcp_server(server, *API), udp_server(server, *DNS):
            assert udp_get(pod, DNS_IP, 53).startswith("error:")
            program_services(node, [kubernetes, dns, dns_tcp])
            assert udp_get(pod, DNS_IP, 53) == "dns"  # PREROUTING, over UDP
            assert udp_get(node, DNS_IP, 53) == "dns"  # OUTPUT
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT) == "apiserver"
            udp_svc = "KUBE-SVC-TCOU7JCQXEZGVUNU"
            sep = endpoint_chain("kube-system/kube-dns:dns", "198.18.200.9:5353", "udp")
            rules = _nat(node)
            assert (f'-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment '
                    f'"kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j {udp_svc}'
                    ) in rules
            assert (f'-A {sep} -p udp -m comment --comment "kube-system/kube-dns:dns" -m udp '
                    "-j DNAT --to-destination 198.18.200.9:5353") in rules
            # dns-tcp has no endpoint: no chain of its own
            assert not any("KUBE-SVC-ERIFXISQEP7F7OF4" in line for line in rules)

            program_services(node, [kubernetes])
            assert not any("kube-dns" in line for line in _nat(node))
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT) == "apiserver"


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="sctp"):
        program_services("unused", [ServicePort("a/b:c", "10.96.0.5", 1, "sctp", [("1.2.3.4", 1)])])
