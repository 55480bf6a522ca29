"""The kube-proxy stand-in on real namespaces: a node's host and its pod reach a TCP server
through the ``kubernetes`` Service's ClusterIP once the Service is programmed, and not before."""

from __future__ import annotations

import os
import shutil

import pytest

from sandbox.network.netns import ip
from sandbox.network.service_proxy import (
    clear_services,
    endpoint_chain,
    program_service,
    service_chain,
)
from tests.network.two_nodes import lab, run, tcp_get, tcp_server

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces"),
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="iptables not installed"),
]

CLUSTER_IP, SERVICE_PORT = "10.96.0.1", 443
API = ("198.18.200.9", 7443)
SVC = "KUBE-SVC-NPX46M4PTMTKRN6Y"  # what every kubeadm node calls default/kubernetes:https


def _nat(namespace: str) -> list[str]:
    return [line for line in run(["iptables-save", "-t", "nat"], namespace).splitlines()
            if line.startswith(("-A", ":KUBE"))]


def test_chain_names_are_kube_proxys() -> None:
    assert service_chain("default/kubernetes:https") == SVC
    sep = endpoint_chain("default/kubernetes:https", "198.18.200.9:7443")
    assert sep.startswith("KUBE-SEP-") and len(sep) == 25
    assert sep != endpoint_chain("default/kubernetes:https", "198.18.200.10:7443")


def test_the_node_and_its_pod_reach_the_api_server_through_the_cluster_ip() -> None:
    with lab() as net:
        node = net.node("a", "198.18.200.2")
        pod = net.pod(node, "pa", "10.245.1.5", "10.245.1.1", "lxca")
        server = net.node("x", API[0])
        # The underlay routes the pod CIDR to its node (nothing masquerades pod traffic here)
        # and has no route for the Service range, so an unprogrammed ClusterIP fails at once.
        ip("route", "add", "10.245.1.0/24", "via", "198.18.200.2", netns=net.underlay)
        ip("route", "add", "unreachable", "10.96.0.0/12", netns=net.underlay)

        with tcp_server(server, *API):
            assert tcp_get(node, *API) == "apiserver"
            assert tcp_get(pod, *API) == "apiserver"
            assert tcp_get(node, CLUSTER_IP, SERVICE_PORT).startswith("error: No route")
            assert tcp_get(pod, CLUSTER_IP, SERVICE_PORT).startswith("error: No route")

            program_service(node, CLUSTER_IP, SERVICE_PORT, [API])
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

        program_service(node, CLUSTER_IP, SERVICE_PORT, [API])
        program_service(node, CLUSTER_IP, SERVICE_PORT, [API])
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

        program_service(node, CLUSTER_IP, SERVICE_PORT, [("198.18.200.10", 7443), API])
        svc_rules = [line for line in _nat(node) if line.startswith(f"-A {SVC}")]
        assert svc_rules == [
            f'-A {SVC} -m comment --comment "default/kubernetes:https -> 198.18.200.9:7443" '
            f"-m statistic --mode random --probability 0.50000000000 -j {one}",
            f'-A {SVC} -m comment --comment "default/kubernetes:https -> 198.18.200.10:7443" '
            f"-j {two}",
        ]

        program_service(node, CLUSTER_IP, SERVICE_PORT, [("198.18.200.10", 7443)])
        chains = sorted(line for line in _nat(node) if line.startswith(":"))
        assert chains == sorted([":KUBE-SERVICES - [0:0]", f":{SVC} - [0:0]", f":{two} - [0:0]"])

        program_service(node, CLUSTER_IP, SERVICE_PORT, [])
        assert [line for line in _nat(node) if "KUBE" in line and "portals" not in line] == [
            ":KUBE-SERVICES - [0:0]"]
        clear_services(node)
        clear_services(node)
        assert _nat(node) == []
