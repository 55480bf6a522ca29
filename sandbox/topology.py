"""What a sandbox is made of: its nodes and the network ranges, shared by `up` and the simulator."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from pydantic import BaseModel, Field

from sandbox.network.plan import NetworkPlan

# The ranges a kubeadm cluster with flannel uses; the migration's new Cilium range lies outside.
CLUSTER_CIDR = "10.244.0.0/16"
NODE_RANGE = ipaddress.ip_network("198.18.0.0/15")  # the simulated nodes' InternalIPs
NODE_CIDR_MASK = 24
SERVICE_CIDR = "10.96.0.0/12"
# The `kubernetes` Service: its ClusterIP (the range's first address) and port.
API_SERVICE_IP = "10.96.0.1"
API_SERVICE_PORT = 443
# The kubelet's clusterDNS and clusterDomain as kubeadm configures them: the Service range's
# tenth address (kubeadm `GetDNSIP`), which is also kube-dns's ClusterIP in
# manifests/cluster-addons.yaml, and the default domain.
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
REGION = "sandbox-1"


def node_cidr_mask(nodes: int) -> int:
    """The controller manager's `--node-cidr-mask-size`: kubeadm's /24 while CLUSTER_CIDR holds
    a block for every node (256), else the longest mask that does (a /26, 64 addresses, for
    1,000 nodes). With too short a mask the node IPAM controller leaves the nodes past the
    256th without a podCIDR, and flannel never runs on them."""
    cluster_prefix = ipaddress.ip_network(CLUSTER_CIDR).prefixlen
    mask = NODE_CIDR_MASK
    while 2 ** (mask - cluster_prefix) < nodes and mask < 30:
        mask += 1
    return mask


# What a node reports unless its spec says otherwise: a mid-sized machine.
DEFAULT_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}


class NodeSpec(BaseModel):
    name: str
    internal_ip: str
    zone: str | None  # None: the node carries no zone label
    control_plane: bool = False
    # A node shaped after another cluster's (a rehearsal): the labels its kubelet adds to the
    # defaults (`--node-labels`), the taints it registers with instead of the default ones
    # (`--register-with-taints`), and what its machine offers.
    extra_labels: dict[str, str] = Field(default_factory=dict)
    registered_taints: list[dict[str, str]] | None = None
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None

    def labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            REGION_LABEL: REGION,
        }
        if self.zone is not None:
            labels[ZONE_LABEL] = self.zone
        if self.control_plane:
            labels[CONTROL_PLANE_LABEL] = ""
        return {**labels, **self.extra_labels}

    def taints(self) -> list[dict[str, str]]:
        if self.registered_taints is not None:
            return self.registered_taints
        if self.control_plane:
            return [{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}]
        return []


class ApiServerAddress(BaseModel):
    """Where the nodes reach the API server: its advertise address and secure port.

    Not the admin kubeconfig's URL (127.0.0.1 on this machine): from a node, 127.0.0.1 is the
    node itself.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def node_address(index: int) -> str:
    """The InternalIP of the ``index``-th node (from 0), in NODE_RANGE."""
    host = index + 2  # an x.1 address looks like a gateway; start at .2
    return str(NODE_RANGE.network_address + 256 * (host // 250) + host % 250 + 2)


class Topology(BaseModel):
    nodes: list[NodeSpec] = Field(default_factory=list)
    # Known once the control plane runs (`up` writes it before starting the simulator).
    api_server: ApiServerAddress | None = None
    # With `--network real`: the underlay and the namespaces' names; None: simulated network.
    network: NetworkPlan | None = None

    @classmethod
    def generate(cls, workers: int, control_planes: int = 1, zones: int = 1,
                 prefix: str = "") -> Topology:
        """Names like kubeadm's: ``cp-1``, ``worker-1``...; zones assigned round-robin.

        InternalIPs are in NODE_RANGE, the range RFC 2544 sets aside for benchmarks: routed
        nowhere, yet a valid endpoint address. Loopback was not: the EndpointSlice controller
        refuses it, so a Service selecting host-network pods (Cilium's `hubble-peer` selects
        the agents) never got endpoints, and the controller retried every sync with the
        whole failing slice (13,089 failures, a 268 MB log in 37 minutes at 1,000 nodes). An
        API-server-to-node call (logs, exec) goes through the egress selector to the
        simulator (`sandbox.egress`), never onto the host's routes.
        """
        nodes: list[NodeSpec] = []
        for index in range(control_planes + workers):
            is_cp = index < control_planes
            ordinal = index + 1 if is_cp else index - control_planes + 1
            name = f"{prefix}{'cp' if is_cp else 'worker'}-{ordinal}"
            nodes.append(NodeSpec(
                name=name,
                internal_ip=node_address(index),
                zone=f"zone-{chr(ord('a') + index % zones)}",
                control_plane=is_cp,
            ))
        return cls(nodes=nodes)

    def on_underlay(self, plan: NetworkPlan) -> Topology:
        """The same nodes with their InternalIPs on ``plan``'s underlay."""
        nodes = [n.model_copy(update={"internal_ip": plan.node_addresses[n.name]})
                 for n in self.nodes]
        return self.model_copy(update={"nodes": nodes, "network": plan})

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Topology:
        return cls.model_validate(json.loads(path.read_text()))
