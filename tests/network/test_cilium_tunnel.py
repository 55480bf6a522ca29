"""The Cilium datapath stand-in on real namespaces: pods on two nodes reach each other through
``cilium_vxlan``, side by side with a flannel-like ``flannel.1``, and across the two overlays."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox.network.cilium_tunnel import (
    DEVICE,
    TUNNEL_MTU,
    VNI,
    TunnelPeer,
    pod_network_config,
    set_up_tunnel,
    sync_tunnel_peers,
    tear_down_tunnel,
    vtep_mac,
)
from sandbox.network.netns import NetworkError, ip
from tests.network.two_nodes import (
    Lab,
    flannel_peer,
    flannel_vxlan,
    lab,
    ping,
    run,
    sysctls,
    tcp_get,
    tcp_server,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create namespaces")

A_IP, B_IP = "198.18.200.2", "198.18.200.3"
A_CILIUM, B_CILIUM = "10.245.1.0/24", "10.245.2.0/24"
A_FLANNEL, B_FLANNEL = "10.244.1.0/24", "10.244.2.0/24"
PEERS = [TunnelPeer(A_IP, A_CILIUM), TunnelPeer(B_IP, B_CILIUM)]
PORT = 8473


def test_vtep_mac_is_a_deterministic_locally_administered_unicast_address() -> None:
    mac = vtep_mac("198.18.200.3")
    assert mac == vtep_mac("198.18.200.3") != vtep_mac("198.18.200.2")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01
    assert mac.endswith(":c6:12:c8:03")
    with pytest.raises(ValueError):
        vtep_mac("fd00::1")


def test_pod_network_config_is_ptp_over_host_local_with_the_tunnel_mtu(tmp_path: Path) -> None:
    config = pod_network_config("10.245.3.0/24", tmp_path)
    assert config == {
        "cniVersion": "1.0.0", "name": "cilium",
        "plugins": [{
            "type": "ptp", "ipMasq": False, "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.3.0/24"}]],
                     "dataDir": str(tmp_path / "var/lib/cni/networks"),
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    }
    json.dumps(config)


def _vxlan(namespace: str) -> dict:
    return json.loads(ip("-j", "-d", "link", "show", DEVICE, netns=namespace))[0]


def _routes(namespace: str) -> dict[str, dict]:
    """Routes on cilium_vxlan by prefix; an encap route's second "dst" (its tunnel endpoint)
    goes to "encap_dst"."""
    def pairs(items: list[tuple[str, object]]) -> dict:
        route: dict = {}
        for key, value in items:
            route["encap_dst" if key in route and key == "dst" else key] = value
        return route
    out = ip("-j", "route", "show", "dev", DEVICE, netns=namespace)
    return {route["dst"]: route for route in json.loads(out, object_pairs_hook=pairs)}


def _cilium_nodes(net: Lab) -> tuple[str, str, str, str]:
    """Nodes A and B with one Cilium pod each and the tunnel set up and synced both ways."""
    node_a, node_b = net.node("a", A_IP), net.node("b", B_IP)
    sysctls(node_a, {"net.ipv4.conf.all.rp_filter": "1"})  # strict, as RHEL sets it
    pod_a = net.pod(node_a, "pa", "10.245.1.5", "10.245.1.1", "lxca")
    pod_b = net.pod(node_b, "pb", "10.245.2.5", "10.245.2.1", "lxcb")
    set_up_tunnel(node_a, PORT, A_IP, A_CILIUM)
    set_up_tunnel(node_b, PORT, B_IP, B_CILIUM)
    sync_tunnel_peers(node_a, A_IP, PEERS)
    sync_tunnel_peers(node_b, B_IP, PEERS)
    return node_a, node_b, pod_a, pod_b


@needs_root
def test_pods_on_two_nodes_reach_each_other_through_cilium_vxlan() -> None:
    with lab() as net:
        node_a, node_b, pod_a, pod_b = _cilium_nodes(net)

        link = _vxlan(node_a)
        data = link["linkinfo"]["info_data"]
        assert data["external"] is True and data["port"] == PORT
        assert link["address"] == vtep_mac(A_IP) and "UP" in link["flags"]
        assert ip("-4", "-br", "addr", "show", "dev", DEVICE, netns=node_a).split()[2:] == [
            "10.245.1.0/32"]
        assert run(["sysctl", "-n", "net.ipv4.conf.all.rp_filter",
                    f"net.ipv4.conf.{DEVICE}.rp_filter"], node_a).split() == ["0", "0"]
        route = _routes(node_a)["10.245.2.0/24"]
        assert route["gateway"] == "10.245.2.0" and "onlink" in route["flags"]
        assert route["encap"] == "ip" and route["id"] == VNI and route["encap_dst"] == B_IP
        assert route["metrics"] == [{"mtu": TUNNEL_MTU}]
        assert "10.245.1.0/24" not in _routes(node_a)  # the local node is skipped
        neighbour = json.loads(ip("-j", "neigh", "show", "dev", DEVICE, netns=node_a))
        assert [(n["dst"], n["lladdr"], n["state"]) for n in neighbour] == [
            ("10.245.2.0", vtep_mac(B_IP), ["PERMANENT"])]

        assert ping(pod_a, "10.245.2.5") == "reply from 10.245.2.5"
        assert ping(pod_b, "10.245.1.5") == "reply from 10.245.1.5"
        assert ping(node_a, "10.245.2.5") == "reply from 10.245.2.5"  # from cilium_vxlan's /32
        # A full-size pod packet (1450 with DF) fits the tunnel; the route MTU caps the host's.
        assert ping(pod_a, "10.245.2.5", size=TUNNEL_MTU - 28) == "reply from 10.245.2.5"
        assert ping(node_a, "10.245.2.5", size=TUNNEL_MTU - 27).startswith("send: Message too")
        with tcp_server(pod_b, "10.245.2.5", 8080):  # TCP too: checksums survive the tunnel
            assert tcp_get(pod_a, "10.245.2.5", 8080) == "apiserver"

        # Again, unchanged: same device, same routes, still forwarding.
        index = link["ifindex"]
        set_up_tunnel(node_a, PORT, A_IP, A_CILIUM)
        sync_tunnel_peers(node_a, A_IP, PEERS)
        assert _vxlan(node_a)["ifindex"] == index
        assert list(_routes(node_a)) == ["10.245.2.0/24"]
        assert ping(pod_a, "10.245.2.5") == "reply from 10.245.2.5"


@needs_root
def test_flannel_and_cilium_overlays_work_side_by_side_and_join_through_routing() -> None:
    with lab() as net:
        node_a, node_b = net.node("a", A_IP), net.node("b", B_IP)
        mac_a = flannel_vxlan(node_a, A_IP, "10.244.1.0")
        mac_b = flannel_vxlan(node_b, B_IP, "10.244.2.0")
        flannel_peer(node_a, B_FLANNEL, "10.244.2.0", mac_b, B_IP)
        flannel_peer(node_b, A_FLANNEL, "10.244.1.0", mac_a, A_IP)
        old_a = net.pod(node_a, "fa", "10.244.1.7", "10.244.1.1", "vetha")
        old_b = net.pod(node_b, "fb", "10.244.2.7", "10.244.2.1", "vethb")
        new_a = net.pod(node_a, "pa", "10.245.1.5", "10.245.1.1", "lxca")
        new_b = net.pod(node_b, "pb", "10.245.2.5", "10.245.2.1", "lxcb")

        assert ping(old_a, "10.244.2.7") == "reply from 10.244.2.7"  # flannel alone first
        for node, node_ip, cidr in ((node_a, A_IP, A_CILIUM), (node_b, B_IP, B_CILIUM)):
            set_up_tunnel(node, PORT, node_ip, cidr)
            sync_tunnel_peers(node, node_ip, PEERS)

        assert ping(old_a, "10.244.2.7") == "reply from 10.244.2.7"
        assert ping(old_b, "10.244.1.7") == "reply from 10.244.1.7"
        assert ping(new_a, "10.245.2.5") == "reply from 10.245.2.5"
        assert ping(new_b, "10.245.1.5") == "reply from 10.245.1.5"
        # The dual overlay: out through one device, back through the other. That asymmetry is
        # why reverse-path filtering must be off or loose (the lab's) on flannel.1: strict, it
        # drops the replies, whose way back points at cilium_vxlan.
        assert ping(old_a, "10.245.2.5") == "reply from 10.245.2.5"
        assert ping(new_b, "10.244.1.7") == "reply from 10.244.1.7"
        assert ping(new_a, "10.244.2.7") == "reply from 10.244.2.7"
        assert ping(old_b, "10.245.1.5") == "reply from 10.245.1.5"


@needs_root
def test_cilium_vxlan_on_flannels_port_fails_as_the_kernel_says_then_moves() -> None:
    with lab() as net:
        node_a = net.node("a", A_IP)
        flannel_vxlan(node_a, A_IP, "10.244.1.0")
        with pytest.raises(NetworkError, match="Address already in use"):
            set_up_tunnel(node_a, 8472, A_IP, A_CILIUM)
        assert "UP" not in _vxlan(node_a)["flags"]  # left down, as upstream leaves it

        set_up_tunnel(node_a, PORT, A_IP, A_CILIUM)  # another port: recreated, and up
        link = _vxlan(node_a)
        assert link["linkinfo"]["info_data"]["port"] == PORT and "UP" in link["flags"]
        set_up_tunnel(node_a, 8474, A_IP, A_CILIUM)
        index = _vxlan(node_a)["ifindex"]
        assert _vxlan(node_a)["linkinfo"]["info_data"]["port"] == 8474
        set_up_tunnel(node_a, 8474, A_IP, "10.245.9.0/24")  # a new block: the same device
        assert _vxlan(node_a)["ifindex"] == index
        assert ip("-4", "-br", "addr", "show", "dev", DEVICE, netns=node_a).split()[2:] == [
            "10.245.9.0/32"]

        tear_down_tunnel(node_a)
        tear_down_tunnel(node_a)
        assert ip("link", "show", DEVICE, netns=node_a, check=False) == ""


@needs_root
def test_sync_removes_the_routes_and_neighbours_of_dropped_peers() -> None:
    with lab() as net:
        node_a = net.node("a", A_IP)
        set_up_tunnel(node_a, PORT, A_IP, A_CILIUM)
        c = TunnelPeer("198.18.200.4", "10.245.3.0/24")
        sync_tunnel_peers(node_a, A_IP, [*PEERS, c])
        assert sorted(_routes(node_a)) == ["10.245.2.0/24", "10.245.3.0/24"]
        assert _routes(node_a)["10.245.3.0/24"]["encap_dst"] == "198.18.200.4"

        sync_tunnel_peers(node_a, A_IP, PEERS)
        assert sorted(_routes(node_a)) == ["10.245.2.0/24"]
        neighbours = ip("-4", "neigh", "show", "dev", DEVICE, netns=node_a)
        assert "10.245.3.0" not in neighbours and "10.245.2.0" in neighbours

        # A peer that moved to another node IP gets its route and MAC rewritten.
        sync_tunnel_peers(node_a, A_IP, [TunnelPeer("198.18.200.5", B_CILIUM)])
        assert _routes(node_a)[B_CILIUM]["encap_dst"] == "198.18.200.5"
        assert vtep_mac("198.18.200.5") in ip("neigh", "show", "dev", DEVICE, netns=node_a)

        sync_tunnel_peers(node_a, A_IP, [])
        assert _routes(node_a) == {}
        assert ip("-4", "neigh", "show", "dev", DEVICE, netns=node_a).strip() == ""
