"""A tiny real topology for the tunnel and service-proxy tests, built only from namespaces:
an underlay namespace holding bridge ``br0`` (198.18.200.1/24, also the nodes' router), node
namespaces with ``eth0`` on it, and pod namespaces wired to their node as the ``ptp`` CNI plugin
does (a veth, the pod's /32, the gateway's /32 on the host side). The root namespace's links
and routes are never touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from sandbox.network import netns
from sandbox.network.netns import ip

UNDERLAY_GATEWAY = "198.18.200.1"
POD_MTU = 1450  # what pod_network_config gives ptp


@dataclass
class Lab:
    prefix: str
    underlay: str = ""
    created: list[str] = field(default_factory=list)
    _ports: int = 0

    def namespace(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        netns.create(name)
        self.created.append(name)
        return name

    def node(self, role: str, address: str) -> str:
        """A node namespace with ``eth0`` (``address``/24) on the underlay bridge, its default
        route via the underlay, forwarding on, and reverse-path filtering as systemd leaves it
        on Debian and Ubuntu nodes: ``all`` at the kernel's 0, every link loose (2). Set here
        because a new namespace inherits the root namespace's values."""
        node = self.namespace(role)
        self._ports += 1
        port = f"u{self._ports}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node,
           netns=self.underlay)
        ip("link", "set", port, "master", "br0", "up", netns=self.underlay)
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=node)
        ip("link", "set", "eth0", "up", netns=node)
        ip("route", "add", "default", "via", UNDERLAY_GATEWAY, netns=node)
        sysctls(node, {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                       "net.ipv4.conf.default.rp_filter": "2"})
        return node

    def pod(self, node: str, role: str, address: str, gateway: str, host_if: str) -> str:
        """A pod namespace behind ``node`` as ptp wires it: ``eth0`` with ``address``/32, a
        route to ``gateway`` on the link and the default route via it; on the node, ``host_if``
        with ``gateway``/32 and a /32 route to the pod."""
        pod = self.namespace(role)
        ip("link", "add", host_if, "mtu", str(POD_MTU), "type", "veth", "peer", "name", "eth0",
           "mtu", str(POD_MTU), "netns", pod, netns=node)
        ip("addr", "add", f"{address}/32", "dev", "eth0", netns=pod)
        ip("link", "set", "eth0", "up", netns=pod)
        ip("route", "add", gateway, "dev", "eth0", "scope", "link", netns=pod)
        ip("route", "add", "default", "via", gateway, "dev", "eth0", netns=pod)
        ip("addr", "add", f"{gateway}/32", "dev", host_if, netns=node)
        ip("link", "set", host_if, "up", netns=node)
        ip("route", "add", f"{address}/32", "dev", host_if, "scope", "link", netns=node)
        return pod


@contextmanager
def lab() -> Iterator[Lab]:
    """A fresh underlay (random names); every namespace made through it is deleted on exit."""
    built = Lab(prefix=f"tnl{uuid.uuid4().hex[:8]}")
    try:
        built.underlay = built.namespace("underlay")
        ip("link", "add", "br0", "type", "bridge", netns=built.underlay)
        ip("addr", "add", f"{UNDERLAY_GATEWAY}/24", "dev", "br0", netns=built.underlay)
        ip("link", "set", "br0", "up", netns=built.underlay)
        sysctls(built.underlay, {"net.ipv4.ip_forward": "1"})
        yield built
    finally:
        for name in reversed(built.created):
            netns.delete(name)


def sysctls(namespace: str, settings: dict[str, str]) -> None:
    for key, value in settings.items():
        netns.sysctl(namespace, key, value)


def flannel_vxlan(node: str, node_ip: str, subnet_address: str) -> str:
    """``flannel.1`` as flanneld's VXLAN backend makes it (VNI 1, UDP 8472, no learning, the
    node's subnet address /32); returns its MAC for the peers' entries."""
    ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", node_ip, "dev", "eth0",
       "dstport", "8472", "nolearning", netns=node)
    ip("addr", "add", f"{subnet_address}/32", "dev", "flannel.1", netns=node)
    ip("link", "set", "flannel.1", "up", netns=node)
    out = ip("-j", "link", "show", "flannel.1", netns=node)
    return str(json.loads(out)[0]["address"])


def flannel_peer(node: str, subnet: str, subnet_address: str, mac: str, peer_ip: str) -> None:
    """What flanneld writes for a remote lease: route via the peer's flannel.1 address onlink,
    a permanent neighbour entry with its MAC, and an FDB entry sending that MAC to its IP."""
    ip("neigh", "replace", subnet_address, "lladdr", mac, "dev", "flannel.1", "nud", "permanent",
       netns=node)
    run(["bridge", "fdb", "replace", mac, "dev", "flannel.1", "dst", peer_ip], node)
    ip("route", "replace", subnet, "via", subnet_address, "dev", "flannel.1", "onlink",
       netns=node)


def run(argv: list[str], namespace: str) -> str:
    result = netns.run_in(namespace, argv, timeout=30)
    assert result.returncode == 0, f"{argv} in {namespace}: {result.stdout}{result.stderr}"
    return result.stdout


# ICMP echo with DF set (like `ping -M do -s SIZE`), since ping itself is not installed.
_PING = r"""
import os, select, socket, struct, sys, time
dst, size, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
ident = os.getpid() & 0xFFFF
body = bytes(size)
header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
packet = struct.pack("!BBHHH", 8, 0, checksum(header + body), ident, 1) + body
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER, IP_PMTUDISC_DO (Linux)
try:
    sock.sendto(packet, (dst, 0))
except OSError as error:
    print(f"send: {error.strerror}")
    sys.exit(2)
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    if not select.select([sock], [], [], left)[0]:
        break
    data, (source, _) = sock.recvfrom(65535)
    start = (data[0] & 0x0F) * 4
    kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[start:start + 8])
    if kind == 0 and reply_id == ident and source == dst:
        print(f"reply from {source}")
        sys.exit(0)
print("no reply")
sys.exit(1)
"""


def ping(namespace: str, destination: str, size: int = 56, timeout: float = 5.0) -> str:
    """Sends one echo request from ``namespace``; returns "reply from ..." or the reason."""
    result = netns.run_in(namespace, [sys.executable, "-c", _PING, destination, str(size),
                                      str(timeout)], timeout=timeout + 10)
    return (result.stdout or result.stderr).strip()


_SERVER = r"""
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    with connection:
        connection.sendall(b"apiserver\n")
"""

_CLIENT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as connection:
        print(connection.recv(100).decode().strip())
except OSError as error:
    print(f"error: {error.strerror or error}")
"""


@contextmanager
def _serving(namespace: str, script: str, address: str, port: int) -> Iterator[None]:
    """Runs a server ``script`` in ``namespace``; returns once it says it listens (on stdout),
    so no test waits on a clock."""
    server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", script,
                               address, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        yield
    finally:
        server.kill()
        server.wait()


def tcp_server(namespace: str, address: str, port: int) -> AbstractContextManager[None]:
    """A TCP server in ``namespace`` answering "apiserver" to each connection."""
    return _serving(namespace, _SERVER, address, port)


def tcp_get(namespace: str, address: str, port: int) -> str:
    """What a connection from ``namespace`` to ``address``:``port`` reads, or "error: ..."."""
    result = netns.run_in(namespace, [sys.executable, "-c", _CLIENT, address, str(port)],
                          timeout=20)
    return (result.stdout or result.stderr).strip()


_UDP_SERVER = r"""
import socket, sys
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    _, peer = server.recvfrom(512)
    server.sendto(b"dns", peer)
"""

_UDP_CLIENT = r"""
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
    client.settimeout(3)
    try:
        client.sendto(b"query", (sys.argv[1], int(sys.argv[2])))
        print(client.recv(100).decode().strip())
    except OSError as error:
        print(f"error: {error.strerror or error}")
"""


def udp_server(namespace: str, address: str, port: int) -> AbstractContextManager[None]:
    """A UDP server in ``namespace`` answering "dns" to each datagram."""
    return _serving(namespace, _UDP_SERVER, address, port)


def udp_get(namespace: str, address: str, port: int) -> str:
    """The answer to one datagram from ``namespace`` to ``address``:``port``, or "error: ..."
    (a lost datagram is "error: timed out" after 3 s)."""
    result = netns.run_in(namespace, [sys.executable, "-c", _UDP_CLIENT, address, str(port)],
                          timeout=20)
    return (result.stdout or result.stderr).strip()
