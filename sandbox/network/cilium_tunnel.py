"""A kernel stand-in for a Ready Cilium agent's tunnel datapath, played with Linux devices and
routes instead of eBPF.

What upstream Cilium (1.18, ``routingMode: tunnel``, ``tunnelProtocol: vxlan``) does, and what
is played here:

- ``pkg/datapath/loader/netlink.go`` ``setupVxlanDevice``: one ``cilium_vxlan`` device in
  metadata (``collect_md``, iproute2's ``external``) mode on ``tunnel-port``, recreated when the
  port changes; ``pkg/datapath/linux/device`` ``EnsureDevice``/``EnableForwarding`` set its
  ``forwarding=1``, ``rp_filter=0``, ``accept_local=1``, ``send_redirects=0`` and bring it up,
  which fails with the kernel's "Address already in use" while another VXLAN device (flannel's
  ``flannel.1``) holds that UDP port; the device is left down then, as upstream leaves it.
  The loader's ``Reinitialize`` also sets ``net.ipv4.conf.all.rp_filter=0``.
- Upstream routes other nodes' pod CIDRs to ``cilium_host`` and bpf_host encapsulates with the
  tunnel key taken from its ipcache/tunnel map (peer node IP, source identity as VNI). Here each
  peer's pod CIDR gets a lightweight-tunnel route on ``cilium_vxlan`` instead (``encap ip id VNI
  dst NODE_IP``), with the route MTU Cilium gives its routes (device MTU minus VXLAN overhead).
- Upstream no neighbour entry is involved (BPF writes the MACs); here the inner frame must
  carry the receiving device's MAC or the peer drops it as not its own, so each node's
  ``cilium_vxlan`` gets a MAC derived from its node IP (``vtep_mac``) and every peer a permanent
  neighbour entry, as flanneld writes for ``flannel.1``. (ARP would resolve it too: the kernel
  sends a request with the tunnel key of the route that triggered it; the permanent entry spares
  the first packet that wait and keeps ARP off the tunnel.)

Not played: ``cilium_host``/``cilium_net`` (the node's address in the pod CIDR sits on
``cilium_vxlan``, as flannel puts its own on ``flannel.1``), identities (one fixed VNI), policy,
BPF masquerading, Geneve, IPv6, encryption, the random MAC upstream gives the device.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.network.netns import NetworkError, ip, run_in

DEVICE = "cilium_vxlan"  # pkg/defaults: VxlanDevice
# Cilium puts the sender's security identity in the VNI; without identities one value stands in.
# A metadata-mode receiver accepts every VNI, so the value only shows in packet captures.
VNI = 2
DEVICE_MTU = 1500  # the underlay's MTU, which upstream gives the tunnel device itself
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
TUNNEL_MTU = DEVICE_MTU - VXLAN_OVERHEAD  # upstream's route MTU, and its endpoints' veth MTU


@dataclass(frozen=True)
class TunnelPeer:
    """Another node as the agent learns it from its CiliumNode: underlay IP and pod CIDR."""

    node_ip: str
    pod_cidr: str


def vtep_mac(node_ip: str) -> str:
    """A locally administered unicast MAC (first octet 0x0a: bit 1 set, bit 0 clear) ending in
    the node's IPv4 octets, so every node can name every other node's ``cilium_vxlan`` MAC
    without a control plane to exchange it."""
    octets = ipaddress.IPv4Address(node_ip).packed
    return ":".join(f"{b:02x}" for b in (0x0A, 0xC1, *octets))


def set_up_tunnel(netns: str, port: int, node_ip: str, pod_cidr: str) -> None:
    """Makes ``cilium_vxlan`` in ``netns`` as a Ready agent owning ``pod_cidr`` has it: metadata
    mode on UDP ``port``, MAC ``vtep_mac(node_ip)``, the CIDR's network address /32, up.

    Idempotent; a device on another port (or of another kind) is recreated, which drops its
    routes: call ``sync_tunnel_peers`` again afterwards. Raises NetworkError with the kernel's
    message when the device cannot come up, e.g. "Address already in use" on flannel's port.
    """
    vtep = _vtep_address(pod_cidr)
    mac = vtep_mac(node_ip)
    link = _link(netns)
    if link is not None and not _matches(link, port):
        ip("link", "delete", DEVICE, netns=netns)
        link = None
    if link is None:
        ip("link", "add", DEVICE, "address", mac, "mtu", str(DEVICE_MTU),
           "type", "vxlan", "external", "dstport", str(port), netns=netns)
    else:
        ip("link", "set", DEVICE, "address", mac, "mtu", str(DEVICE_MTU), netns=netns)
    _sysctls(netns, {"net.ipv4.conf.all.rp_filter": "0",
                     f"net.ipv4.conf.{DEVICE}.forwarding": "1",
                     f"net.ipv4.conf.{DEVICE}.rp_filter": "0",
                     f"net.ipv4.conf.{DEVICE}.accept_local": "1",
                     f"net.ipv4.conf.{DEVICE}.send_redirects": "0"})
    for stale in _addresses(netns) - {f"{vtep}/32"}:
        ip("addr", "del", stale, "dev", DEVICE, netns=netns)
    ip("addr", "replace", f"{vtep}/32", "dev", DEVICE, netns=netns)
    try:
        ip("link", "set", DEVICE, "up", netns=netns)
    except NetworkError as error:
        raise NetworkError(f"{DEVICE} on UDP port {port} in {netns} cannot come up (another "
                           f"VXLAN device on that port?): {error}") from error


def sync_tunnel_peers(netns: str, local_ip: str, peers: list[TunnelPeer]) -> None:
    """Makes the routes and neighbour entries on ``cilium_vxlan`` match ``peers``: for each other
    node, its pod CIDR through an encap route to its node IP via its VTEP address, and that
    address's neighbour entry with the peer's VTEP MAC. Entries of peers no longer listed go;
    the local node (``local_ip``) is skipped. The device must exist (``set_up_tunnel``)."""
    wanted: dict[str, TunnelPeer] = {}
    for peer in peers:
        if peer.node_ip == local_ip:
            continue
        cidr = str(ipaddress.IPv4Network(peer.pod_cidr))
        other = wanted.get(cidr)
        if other is not None and other.node_ip != peer.node_ip:
            raise ValueError(f"pod CIDR {cidr} claimed by both {other.node_ip} and {peer.node_ip}")
        wanted[cidr] = peer
    gateways = {_vtep_address(cidr) for cidr in wanted}

    for route in _json(netns, "-4", "route", "show", "dev", DEVICE):
        dst = route.get("dst", "")
        if route.get("protocol") != "kernel" and _as_cidr(dst) not in wanted:
            ip("route", "del", dst, "dev", DEVICE, netns=netns)
    for neighbour in _json(netns, "-4", "neigh", "show", "dev", DEVICE):
        if neighbour.get("dst") not in gateways:
            ip("neigh", "del", neighbour["dst"], "dev", DEVICE, netns=netns)

    for cidr, peer in sorted(wanted.items()):
        gateway = _vtep_address(cidr)
        # The neighbour first, so the route's first packet finds a complete entry.
        ip("neigh", "replace", gateway, "lladdr", vtep_mac(peer.node_ip), "dev", DEVICE,
           "nud", "permanent", netns=netns)
        ip("route", "replace", cidr, "encap", "ip", "id", str(VNI), "dst", peer.node_ip,
           "via", gateway, "dev", DEVICE, "onlink", "mtu", str(TUNNEL_MTU), netns=netns)


def tear_down_tunnel(netns: str) -> None:
    """Removes ``cilium_vxlan`` (its routes and neighbour entries go with it); nothing happens
    when it does not exist. Sysctls stay as set, as upstream leaves them."""
    if _link(netns) is not None:
        ip("link", "delete", DEVICE, netns=netns)


def pod_network_config(pod_cidr: str, node_root: Path) -> dict[str, Any]:
    """The CNI conflist standing in for Cilium's CNI plugin on a node whose agent owns
    ``pod_cidr``. Cilium wires each endpoint with a veth and a /32 route to it on the host, as
    the ``ptp`` plugin does; host-local hands out the addresses. No masquerading: upstream's is
    the agent's own (BPF or iptables), not played here."""
    subnet = str(ipaddress.IPv4Network(pod_cidr))
    return {
        "cniVersion": "1.0.0",
        "name": "cilium",
        "plugins": [{
            "type": "ptp",
            "ipMasq": False,
            "mtu": TUNNEL_MTU,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": str(node_root / "var" / "lib" / "cni" / "networks"),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    }


def _vtep_address(pod_cidr: str) -> str:
    return str(ipaddress.IPv4Network(pod_cidr).network_address)


def _as_cidr(dst: str) -> str:
    try:
        return str(ipaddress.IPv4Network(dst))
    except ValueError:
        return dst  # "default" and the like: never wanted on this device


def _link(netns: str) -> dict[str, Any] | None:
    links = _json(netns, "-d", "link", "show", DEVICE, check=False)
    return links[0] if links else None


def _matches(link: dict[str, Any], port: int) -> bool:
    info = link.get("linkinfo", {})
    data = info.get("info_data", {})
    return (info.get("info_kind") == "vxlan" and bool(data.get("external"))
            and data.get("port") == port)


def _addresses(netns: str) -> set[str]:
    found: set[str] = set()
    for link in _json(netns, "-4", "addr", "show", "dev", DEVICE):
        found.update(f"{entry['local']}/{entry['prefixlen']}"
                     for entry in link.get("addr_info", []))
    return found


def _json(netns: str, *args: str, check: bool = True) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns, check=check).strip()
    return json.loads(out, object_pairs_hook=_first_wins) if out else []


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # iproute2 prints an encap route's tunnel destination as a second "dst" key after the
    # prefix; json.loads would keep the last one.
    found: dict[str, Any] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


def _sysctls(netns: str, settings: dict[str, str]) -> None:
    result = run_in(netns, ["sysctl", "-qw", *(f"{k}={v}" for k, v in settings.items())])
    if result.returncode != 0:
        raise NetworkError(f"sysctls in {netns} failed: {result.stderr.strip()}")
