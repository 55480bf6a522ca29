"""Pod IP allocation the way the two CNIs do it.

Flannel delegates to host-local IPAM over the node's ``spec.podCIDR`` (the first address is the
``cni0`` bridge). Cilium's cluster-pool mode hands each node a block of the pool, recorded in the
CiliumNode's ``spec.ipam.podCIDRs``, and allocates pod IPs inside it (the first address is
``cilium_host``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class ExhaustedError(Exception):
    pass


class HostLocal:
    """Allocates addresses from one CIDR, skipping the network, gateway and broadcast."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.used: set[str] = set()

    def contains(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in self.network

    def allocate(self) -> str:
        for host in list(self.network.hosts())[1:]:
            address = str(host)
            if address not in self.used:
                self.used.add(address)
                return address
        raise ExhaustedError(f"no free address left in {self.network}")

    def reserve(self, ip: str) -> None:
        self.used.add(ip)

    def release(self, ip: str) -> None:
        self.used.discard(ip)


def next_free_block(pools: Iterable[str], mask_size: int, taken: Iterable[str]) -> str:
    """The first ``/mask_size`` block of the pools not overlapping any taken block."""
    taken_networks = [ipaddress.ip_network(t) for t in taken]
    for pool in pools:
        for block in ipaddress.ip_network(pool).subnets(new_prefix=mask_size):
            if not any(block.overlaps(t) for t in taken_networks):
                return str(block)
    raise ExhaustedError(f"cluster pool {list(pools)} has no free /{mask_size} block")

