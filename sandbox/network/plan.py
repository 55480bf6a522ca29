"""Where the real-network sandbox puts its nodes: names, the underlay range, the guarded ranges.

The plan is chosen once by `up` (saved in topology.json) from what the host's root namespace
already uses, so the sandbox never shadows a route the machine relies on, and never lets a pod
or node address leave by the host's default route.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from sandbox.network.netns import NetworkError, ip

UNDERLAY_PREFIXLEN = 24
MAX_NODES = 250  # .1 is the gateway, .2 to .251 the nodes

# Routes the sandbox adds in the root namespace carry this protocol number and a metric derived
# from the prefix, so a crashed sandbox's routes are found from its prefix alone and nobody
# else's route is ever taken for one of them.
ROUTE_PROTO = 213
_METRIC_BASE = 0x4D430000

# Benchmarking (RFC 2544) then shared address space (RFC 6598): neither is routed on the
# internet, and both are rarely configured on a developer's or CI machine.
_CANDIDATE_BLOCKS = ("198.18.0.0/16", "198.19.0.0/16", "100.64.0.0/16")

_PREFIX_PATTERN = r"^[a-z][a-z0-9]{1,7}$"  # <= 8 chars: "<prefix>-v251" fits IFNAMSIZ


def prefix_for(state_dir: Path) -> str:
    """``cm`` and 4 hex digits of the state dir's resolved path: stable across runs of one
    sandbox, distinct between sandboxes in different directories."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
    return "cm" + digest[:4]


def route_metric(prefix: str) -> int:
    """The metric on every root-namespace route the sandbox with ``prefix`` adds."""
    return _METRIC_BASE + (zlib.crc32(prefix.encode()) & 0xFFFF)


class NetworkPlan(BaseModel):
    prefix: str = Field(pattern=_PREFIX_PATTERN)
    bridge: str
    underlay: str
    gateway: str
    node_addresses: dict[str, str] = Field(default_factory=dict)
    guarded: list[str] = Field(default_factory=list)

    @field_validator("underlay")
    @classmethod
    def _underlay_is_24(cls, value: str) -> str:
        network = ipaddress.IPv4Network(value)
        if network.prefixlen != UNDERLAY_PREFIXLEN:
            raise ValueError(f"underlay {value} is not a /{UNDERLAY_PREFIXLEN}")
        return str(network)

    @field_validator("guarded")
    @classmethod
    def _guarded_are_networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.IPv4Network(cidr)) for cidr in value]

    def node_ip(self, node: str) -> str:
        try:
            return self.node_addresses[node]
        except KeyError:
            raise NetworkError(f"node {node!r} is not in the network plan") from None

    def node_netns(self, node: str) -> str:
        self.node_ip(node)
        return f"{self.prefix}-{node}"

    def node_veth(self, node: str) -> str:
        """The root-namespace end of the node's veth, named after its address's last octet
        (node names may be longer than a link name can be)."""
        return f"{self.prefix}-v{self.node_ip(node).rsplit('.', 1)[1]}"

    @property
    def metric(self) -> int:
        return route_metric(self.prefix)

    def bridge_mac(self) -> str:
        return _mac(self.prefix, 0xFF, self.gateway)

    def node_macs(self, node: str) -> tuple[str, str]:
        """(node eth0, root veth end): fixed, so a rebooted node keeps its MAC as a real NIC
        does and its neighbours' ARP entries stay right."""
        address = self.node_ip(node)
        return _mac(self.prefix, 0x00, address), _mac(self.prefix, 0x01, address)


def _mac(prefix: str, role: int, address: str) -> str:
    digest = hashlib.sha256(prefix.encode()).digest()
    octets = ipaddress.IPv4Address(address).packed
    # 0x02: locally administered, unicast.
    return ":".join(f"{b:02x}" for b in (0x02, digest[0], digest[1], role, octets[2], octets[3]))


@dataclass(frozen=True)
class HostEntry:
    """An IPv4 address or route of the host, as a network, with how to describe it."""

    network: ipaddress.IPv4Network
    description: str
    ours: bool  # made by the sandbox with the prefix being planned (a leftover of its last run)


def host_entries(prefix: str, netns: str | None = None) -> list[HostEntry]:
    """The IPv4 addresses and non-default routes (every table) of the root namespace, or of
    ``netns`` (tests)."""
    metric = route_metric(prefix)
    entries = []
    for link in json.loads(ip("-4", "-j", "addr", "show", netns=netns) or "[]"):
        name = link.get("ifname", "?")
        for info in link.get("addr_info", []):
            network = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
            entries.append(HostEntry(network, f"address {info['local']}/{info['prefixlen']} on "
                                              f"{name}", name.startswith(prefix)))
    for route in json.loads(ip("-4", "-j", "route", "show", "table", "all", netns=netns) or "[]"):
        table = route.get("table", "main")
        if table == "local":  # the addresses above, seen again
            continue
        dst = route.get("dst", "default")
        network = ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst, strict=False)
        # The default route, also as the two halves VPN clients install: every packet not
        # matched elsewhere, not a use of any particular range.
        if network.prefixlen <= 1:
            continue
        ours = (route.get("dev", "").startswith(prefix)
                or (str(route.get("protocol")) == str(ROUTE_PROTO)
                    and route.get("metric") == metric))
        description = f"route `{_route_text(route)}` (table {table})"
        if str(route.get("protocol")) == str(ROUTE_PROTO) and not ours:
            description += ", made by another real-network sandbox"
        entries.append(HostEntry(network, description, ours))
    return entries


def _route_text(route: dict[str, object]) -> str:
    words = []
    if route.get("type") not in (None, "unicast"):
        words.append(str(route["type"]))
    words.append(str(route.get("dst", "default")))
    for key, word in (("gateway", "via"), ("dev", "dev"), ("protocol", "proto"),
                      ("metric", "metric")):
        if key in route:
            words += [word, str(route[key])]
    return " ".join(words)


def guard_conflicts(cidr: str, entries: list[HostEntry]) -> list[HostEntry]:
    network = ipaddress.IPv4Network(cidr)
    return [entry for entry in entries if not entry.ours and entry.network.overlaps(network)]


def refuse_guard_conflicts(cidr: str, entries: list[HostEntry]) -> None:
    conflicts = guard_conflicts(cidr, entries)
    if not conflicts:
        return
    found = "; ".join(entry.description for entry in conflicts[:3])
    if len(conflicts) > 3:
        found += f" (and {len(conflicts) - 3} more)"
    raise NetworkError(
        f"{cidr} (a cluster range the real-network sandbox routes itself) overlaps this host's "
        f"{found}. The sandbox would shadow it, or pod traffic could leave this machine by it. "
        "Remove it if it is a leftover (another real-network sandbox: run its `down`, whose "
        "state dir /run/cilium-migrate/real-network/<prefix> names; an old CNI bridge: "
        "`ip link del` it), or use `--network simulated` or another machine.")


def candidates() -> Iterator[ipaddress.IPv4Network]:
    for block in _CANDIDATE_BLOCKS:
        yield from ipaddress.IPv4Network(block).subnets(new_prefix=UNDERLAY_PREFIXLEN)


def choose_plan(state_dir: Path, nodes: list[str], guarded: list[str],
                netns: str | None = None, prefix: str | None = None) -> NetworkPlan:
    """A plan for ``nodes``, in the first candidate /24 that nothing on the host uses.

    ``netns`` inspects a test namespace instead of the root one; ``prefix`` overrides the one
    derived from ``state_dir``. Raises NetworkError when a guarded range is in use on the host.
    """
    if len(nodes) > MAX_NODES:
        raise NetworkError(f"{len(nodes)} nodes: the real network holds at most {MAX_NODES}")
    if len(set(nodes)) != len(nodes):
        raise NetworkError("node names repeat")
    prefix = prefix or prefix_for(state_dir)
    guarded = [str(ipaddress.IPv4Network(cidr)) for cidr in guarded]
    entries = host_entries(prefix, netns)
    for cidr in guarded:
        refuse_guard_conflicts(cidr, entries)
    taken = [entry.network for entry in entries if not entry.ours]
    taken += [ipaddress.IPv4Network(cidr) for cidr in guarded]
    for candidate in candidates():
        if any(candidate.overlaps(network) for network in taken):
            continue
        hosts = list(candidate.hosts())
        return NetworkPlan(
            prefix=prefix, bridge=f"{prefix}-br", underlay=str(candidate),
            gateway=str(hosts[0]),
            node_addresses={node: str(hosts[index + 1]) for index, node in enumerate(nodes)},
            guarded=guarded)
    raise NetworkError(
        f"every candidate underlay range ({', '.join(_CANDIDATE_BLOCKS)} in /24s) overlaps an "
        "address or route of this host; free one of them or use `--network simulated`")
