"""Rules about addresses and ports: the two overlays must not collide."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network

from plan.rules.context import Issue, RuleContext, some_of

# The UDP port a tunnel device binds when the chart's tunnelPort is 0 ("protocol default").
DEFAULT_TUNNEL_PORTS = {"vxlan": 8472, "geneve": 6081}
# Flannel backends that route in the kernel without a UDP socket of their own.
FLANNEL_BACKENDS_WITHOUT_PORT = frozenset({"host-gw", "alloc"})


def pod_cidr_overlaps_old_network(ctx: RuleContext) -> Iterator[Issue]:
    """The new pod CIDR must not overlap the old CNI's pod network."""
    old: list[IPv4Network] = []
    if ctx.facts.flannel is not None:
        old.append(ctx.facts.flannel.network)
    for node in ctx.nodes:
        for cidr in node.pod_cidrs:
            # Node ranges normally lie inside flannel's network; list only those that do not.
            if isinstance(cidr, IPv4Network) and not any(cidr.subnet_of(net) for net in old):
                old.append(cidr)
    for pool in ctx.pod_pools:
        for network in old:
            if pool.overlaps(network):
                yield Issue(
                    f"Cilium pod CIDR {pool} overlaps the old CNI's pod network {network}.",
                    "Choose network.podCIDRs outside the flannel network and node pod ranges.",
                    str(pool),
                )


def pod_cidr_overlaps_service(ctx: RuleContext) -> Iterator[Issue]:
    """The new pod CIDR must not overlap the service CIDR."""
    for pool in ctx.pod_pools:
        for network in ctx.facts.service_cidrs:
            if isinstance(network, IPv4Network) and pool.overlaps(network):
                yield Issue(
                    f"Cilium pod CIDR {pool} overlaps the service CIDR {network}.",
                    "Choose network.podCIDRs outside the service range.",
                    str(pool),
                )


def pod_cidr_overlaps_node_ip(ctx: RuleContext) -> Iterator[Issue]:
    """The new pod CIDR must not contain a node's address."""
    for pool in ctx.pod_pools:
        inside = [
            node.name
            for node in ctx.nodes
            if node.internal_ip is not None and node.internal_ip in pool
        ]
        if inside:
            yield Issue(
                f"Cilium pod CIDR {pool} contains the InternalIP of {some_of(inside)}.",
                "Choose network.podCIDRs outside the node subnets.",
                str(pool),
            )


def pod_cidr_too_small(ctx: RuleContext) -> Iterator[Issue]:
    """The pod CIDRs must hold one per-node block (clusterPoolIPv4MaskSize) for every node."""
    mask = ctx.value("ipam.operator.clusterPoolIPv4MaskSize")
    if mask is None:
        mask = 24  # the chart's default
    if not isinstance(mask, int) or isinstance(mask, bool) or not 1 <= mask <= 32:
        return  # a wrong type or range is the schema rule's business
    blocks = sum(2 ** (mask - pool.prefixlen) for pool in ctx.pod_pools if pool.prefixlen <= mask)
    needed = len(ctx.facts.nodes)
    if blocks < needed:
        pools = ", ".join(str(pool) for pool in ctx.pod_pools)
        yield Issue(
            f"{pools} holds {blocks} per-node /{mask} block(s) but the cluster has {needed} nodes.",
            "Use a larger network.podCIDRs range or a longer clusterPoolIPv4MaskSize in "
            "cilium.extraValues.",
        )


def tunnel_port_collision(ctx: RuleContext) -> Iterator[Issue]:
    """Cilium's tunnel must not use the UDP port flannel's tunnel already holds."""
    flannel = ctx.facts.flannel
    if flannel is None or flannel.backend_type.lower() in FLANNEL_BACKENDS_WITHOUT_PORT:
        return
    protocol, port = ctx.value("tunnelProtocol"), ctx.value("tunnelPort")
    if not isinstance(port, int) or isinstance(port, bool):
        return  # the schema rule reports a wrong type
    if port == 0:
        port = DEFAULT_TUNNEL_PORTS.get(str(protocol), 0)
    flannel_port = flannel.port or DEFAULT_TUNNEL_PORTS["vxlan"]
    # One UDP port can carry only one tunnel device, whatever the protocols: a geneve device on
    # flannel's VXLAN port fails with "address already in use" just the same.
    if port == flannel_port:
        yield Issue(
            f"Cilium's {protocol} tunnel would use UDP port {port}, which flannel's "
            f"{flannel.backend_type} backend already uses.",
            f"Set network.tunnelPort to another port (the procedure uses 8473), not {port}.",
            str(port),
        )
