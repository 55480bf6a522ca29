"""Pod IP allocation the way the two CNIs do it.

Flannel delegates to host-local IPAM over the node's ``spec.podCIDR`` (the first address is the
``cni0`` bridge). Cilium's cluster-pool mode hands each node a block of the pool, recorded in the
CiliumNode's ``spec.ipam.podCIDRs``, and allocates pod IPs inside it (the first address is
``cilium_host``).
"""

from __future__ import annotations

import ipaddress


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


class CidrSet:
    """One cluster-pool CIDR cut into ``/mask_size`` blocks, as the operator's allocator keeps it
    (Cilium `pkg/ipam/cidrset/cidr_set.go`): `allocate_next` takes the first free block from
    the one after the last it handed out, wrapping around; `occupy` marks a block some node
    already holds; `release` frees one."""

    def __init__(self, pool: str, mask_size: int) -> None:
        self.pool = ipaddress.ip_network(pool)
        if mask_size < self.pool.prefixlen:
            raise ValueError(f"mask size /{mask_size} is larger than the pool {pool}")
        self.mask_size = mask_size
        self.size = 2 ** (mask_size - self.pool.prefixlen)
        self.used: set[int] = set()
        self.next_candidate = 0

    def _block(self, index: int) -> str:
        step = 2 ** (self.pool.max_prefixlen - self.mask_size)
        address = ipaddress.ip_address(int(self.pool.network_address) + index * step)
        return f"{address}/{self.mask_size}"

    def _index(self, block: str) -> int | None:
        network = ipaddress.ip_network(block, strict=False)
        if network.prefixlen != self.mask_size or not network.subnet_of(self.pool):  # type: ignore[arg-type]
            return None
        step = 2 ** (self.pool.max_prefixlen - self.mask_size)
        return (int(network.network_address) - int(self.pool.network_address)) // step

    def full(self) -> bool:
        return len(self.used) >= self.size

    def allocate_next(self) -> str:
        if self.full():
            raise ExhaustedError(f"cluster pool {self.pool} has no free /{self.mask_size} block")
        candidate = self.next_candidate
        for _ in range(self.size):
            if candidate not in self.used:
                break
            candidate = (candidate + 1) % self.size
        self.next_candidate = (candidate + 1) % self.size
        self.used.add(candidate)
        return self._block(candidate)

    def occupy(self, block: str) -> bool:
        """Marks ``block`` as taken; False when it is not one of this pool's blocks."""
        index = self._index(block)
        if index is None:
            return False
        self.used.add(index)
        return True

    def release(self, block: str) -> None:
        index = self._index(block)
        if index is not None:
            self.used.discard(index)
