"""ClusterFacts: what discovery found in the cluster, as plain data.

Discovery (an activity) fills these models; preflight, the wave planner and the Helm values
renderer only read them. Nothing here talks to Kubernetes, so tests build facts by hand.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, IPvAnyNetwork, model_validator

# The label the CiliumNodeConfig selects; a node carrying it switches to Cilium on agent restart.
MIGRATION_LABEL = "io.cilium.migration/cilium-default"


class FactsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Taint(FactsModel):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeFacts(FactsModel):
    name: str = Field(min_length=1)
    control_plane: bool = False
    zone: str | None = None  # topology.kubernetes.io/zone, when set
    schedulable: bool = True  # false when cordoned (spec.unschedulable)
    ready: bool = True
    boot_id: str = ""
    pod_cidrs: list[IPvAnyNetwork] = Field(default_factory=list)  # spec.podCIDRs (node IPAM)
    internal_ip: IPvAnyAddress | None = None
    taints: list[Taint] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def accepts_pods(self) -> bool:
        """Could evicted pods land here? Cordoned, NotReady or NoSchedule-tainted nodes: no."""
        blocked = any(taint.effect in ("NoSchedule", "NoExecute") for taint in self.taints)
        return self.schedulable and self.ready and not blocked


class FlannelFacts(FactsModel):
    """Flannel as installed: where it runs and its net-conf.json."""

    namespace: str
    daemonset: str
    network: IPv4Network  # net-conf.json "Network", e.g. 10.244.0.0/16
    backend_type: str = "vxlan"  # net-conf.json Backend.Type
    port: int = Field(default=8472, ge=0, le=65535)  # Backend.Port; flannel's default when absent
    vni: int = Field(default=1, ge=0)  # Backend.VNI


class ExistingCilium(FactsModel):
    namespace: str
    version: str | None = None
    release: str | None = None  # Helm release name, when installed with Helm


class NamespacedName(FactsModel):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodDisruptionBudgetFacts(FactsModel):
    """A PDB's status as the disruption controller reports it."""

    namespace: str
    name: str
    selector: str = ""  # human-readable, e.g. "app=db"
    disruptions_allowed: int = Field(ge=0)
    current_healthy: int = Field(ge=0)
    desired_healthy: int = Field(ge=0)
    expected_pods: int = Field(ge=0)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodFacts(FactsModel):
    """A pod a drain may refuse to evict: it keeps data in emptyDir volumes (lost on eviction)
    or no controller owns it (nothing re-creates it). DaemonSet, mirror and finished pods,
    which a drain leaves alone, are never recorded."""

    namespace: str
    name: str
    node: str
    empty_dirs: list[str] = Field(default_factory=list)  # its emptyDir volumes, by name
    unmanaged: bool = False  # no controller owns it

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# Where an API server address for the nodes came from: the spec, or what the cluster publishes
# (kubeadm's kube-system/kube-proxy ConfigMap, or kube-public/cluster-info).
ApiEndpointSource = Literal["spec", "kube-proxy", "cluster-info"]


class ApiEndpoint(FactsModel):
    """An address where the nodes reach the API server, and where it was learnt."""

    host: str = Field(min_length=1)  # host name or IP, no brackets (as KUBERNETES_SERVICE_HOST)
    port: int = Field(ge=1, le=65535)
    source: ApiEndpointSource

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ClusterFacts(FactsModel):
    nodes: list[NodeFacts]
    flannel: FlannelFacts | None = None
    other_cnis: list[str] = Field(default_factory=list)  # e.g. "calico", "weave"
    service_cidrs: list[IPvAnyNetwork] = Field(default_factory=list)
    existing_cilium: ExistingCilium | None = None
    network_policies: list[NamespacedName] = Field(default_factory=list)
    pdbs: list[PodDisruptionBudgetFacts] = Field(default_factory=list)
    kube_proxy_present: bool = True
    # Where the nodes reach the API server, as the cluster publishes it; None when it does not.
    # Never the client's own URL: a port-forward, proxy or gateway is not what nodes can use.
    api_endpoint: ApiEndpoint | None = None
    api_endpoint_notes: list[str] = Field(default_factory=list)  # published but unusable: why
    worker_node: str | None = None  # node running the orchestrator's worker, when in-cluster
    # Pods with emptyDir data or no controller, on any node: which of them a drain refuses
    # depends on the spec, so preflight decides (plan.rules.disruption).
    pods_drain_may_refuse: list[PodFacts] = Field(default_factory=list)
    # What the chart is rendered against (helm's --kube-version and --api-versions): the API
    # server's gitVersion (GET /version) and every group/version it serves (GET /api, /apis).
    server_version: str | None = None
    api_versions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_node_names(self) -> ClusterFacts:
        counts = Counter(node.name for node in self.nodes)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"node names repeat: {', '.join(repeated)}")
        return self

    def node(self, name: str) -> NodeFacts:
        """The node called `name`; KeyError if discovery did not find it."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)
