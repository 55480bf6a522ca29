"""The Cilium operator as the simulator plays it: CRD registration and cluster-pool IPAM.

The chart's `cilium-operator` Deployment runs two replicas. Each one, once it reaches the API
server, is Ready and joins the leader election; only the leader works (`operator/cmd/root.go`,
`runOperator` and the cells under `WithLeaderLifecycle`). The leader first registers the Cilium
CRDs of its own version (`pkg/k8s/apis/cilium.io/client/register.go`, `RegisterCRDs`), then runs
the cluster-pool allocator (`pkg/ipam/allocator/clusterpool`, `pkg/ipam/allocator/podcidr`):
every CiliumNode without `spec.ipam.podCIDRs` gets the next free block of
`cluster-pool-ipv4-cidr` (blocks of `cluster-pool-ipv4-mask-size`), blocks already written are
kept. No container runs: the CRDs are the manifests of the fetched release of the image's tag
(`sandbox.cilium_release`), which upstream embeds in the binary.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from activities.kubeapi import MERGE, Obj
from sandbox.cilium_release import CiliumRelease, find_release
from sandbox.simulator.ipam import CidrSet, ExhaustedError
from sandbox.simulator.state import start_attempt
from sandbox.toolchain import ToolchainError

if TYPE_CHECKING:
    from sandbox.simulator.kubelet import Simulator
    from sandbox.simulator.state import NodeState, PodState

log = logging.getLogger("sandbox.simulator")

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CILIUM_NODES = "/apis/cilium.io/v2/ciliumnodes"
# client-go leader election as the operator configures it (operator/option/config.go):
# a replica takes over a released Lease at its next try, an abandoned one once it expires.
LEADER_ELECTION_LEASE_DURATION = 15.0
LEADER_ELECTION_RETRY_PERIOD = 2.0
OPERATOR_LANE = "cilium-operator"  # the simulator's write lane for the operator's writes
_IMAGE = re.compile(r"/operator(-generic|-aws|-azure|-alibabacloud)?:(v?[0-9][^@]*)(@.*)?$")


def operator_version(image: str) -> str | None:
    """The Cilium version of an operator image (`quay.io/cilium/operator-generic:v1.18.4`,
    with or without a digest); None for any other image."""
    match = _IMAGE.search(image)
    return match.group(2).lstrip("v") if match else None


def operator_container(pod: PodState) -> Obj | None:
    return next((c for c in pod.containers() if c.get("name") == "cilium-operator"
                 and operator_version(c.get("image", "")) is not None), None)


@dataclass
class Replica:
    uid: str
    node: str
    release: CiliumRelease
    config: dict[str, str]  # cilium-config as the replica read it at start (--config-dir)


@dataclass
class OperatorState:
    """What the running operator replicas hold: who leads, and the leader's allocator."""

    replicas: dict[str, Replica] = field(default_factory=dict)  # by pod UID, oldest first
    leader: str | None = None
    election_pending: bool = False
    pools: list[CidrSet] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)  # CiliumNode name -> its block
    synced: bool = False  # the leader has listed the CiliumNodes and occupied their blocks


class CiliumOperator:
    """Hooks the pod personality calls; the state lives on the simulator (`sim.operator`)."""

    # ---- the pod ---------------------------------------------------------------------------

    def start(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        """The operator process starts: its image's release, the API server, then Ready."""
        container = operator_container(pod)
        version = operator_version(container.get("image", "")) if container else None
        problem: str | None = None
        release: CiliumRelease | None = None
        try:
            release = find_release(version or "")
        except ToolchainError as error:
            problem = (f"the sandbox cannot play cilium-operator {version}: {error} "
                       "(its CRDs come from the fetched release)")
        if problem is None:
            problem = sim.api_server_problem(node, pod)
        if problem is not None or release is None:
            log.info("node %s: operator %s: %s", node.name, pod.name, problem)
            back_off = sim.crash_containers(pod, problem or "")
            sim.later(back_off, self._restart, sim, pod.uid, start_attempt(node, pod))
            return
        config_map = sim.kube.get_or_none(
            f"/api/v1/namespaces/{pod.namespace}/configmaps/cilium-config")
        config: dict[str, str] = dict((config_map or {}).get("data") or {})
        sim.set_pod_ready(pod, True)  # its /healthz asks only the API server for its version
        sim.operator.replicas[pod.uid] = Replica(pod.uid, node.name, release, config)
        self._elect(sim, delay=0.0)

    def _restart(self, sim: Simulator, uid: str, crashed: tuple[str, int]) -> None:
        pod = sim.pods.get(uid)
        if pod is None or not pod.started or pod.terminating:
            return
        if crashed != start_attempt(sim.nodes[pod.node], pod):
            return  # started afresh since (a reboot): that start has its own timer
        sim.restart_containers(pod)
        sim.later(sim.settings.agent_ready_delay, self._start_if_running, sim, uid)

    def _start_if_running(self, sim: Simulator, uid: str) -> None:
        pod = sim.pods.get(uid)
        if pod is not None and pod.started and not pod.terminating:
            self.start(sim, sim.nodes[pod.node], pod)

    def stop(self, sim: Simulator, pod: PodState) -> None:
        """The replica's process ends. A leader stopped by its pod's deletion releases the
        Lease (`ReleaseOnCancel`), so another replica takes over at its next try; a leader
        that vanishes with its node leaves the Lease to expire first."""
        state = sim.operator
        if state.replicas.pop(pod.uid, None) is None:
            return
        if state.leader == pod.uid:
            log.info("operator %s stopped leading", pod.name)
            state.leader, state.pools, state.blocks, state.synced = None, [], {}, False
            delay = (LEADER_ELECTION_RETRY_PERIOD if pod.terminating
                     else LEADER_ELECTION_LEASE_DURATION)
            self._elect(sim, delay)

    # ---- leader election -------------------------------------------------------------------

    def _elect(self, sim: Simulator, delay: float) -> None:
        state = sim.operator
        if state.leader is None and not state.election_pending:
            state.election_pending = True
            sim.later(delay, self._take_lead, sim)

    def _take_lead(self, sim: Simulator) -> None:
        state = sim.operator
        state.election_pending = False
        if state.leader is not None or not state.replicas:
            return
        replica = next(iter(state.replicas.values()))
        state.leader = replica.uid
        log.info("operator on %s leads (Cilium %s)", replica.node, replica.release.version)
        # The leader's API work goes out on its own lane: no kubelet or agent waits for it.
        sim.write(OPERATOR_LANE, self._register_crds, sim, replica)

    # ---- what the leader does --------------------------------------------------------------

    def _register_crds(self, sim: Simulator, replica: Replica) -> None:
        """On the operator's lane: `CreateUpdateCRD` for every CRD of the release: created
        when missing; one that exists is left as it is (see FIDELITY.md for the schema-version
        update not played). Then the allocator starts, back on the dispatcher."""
        for crd in crd_manifests(replica.release):
            name = crd["metadata"]["name"]
            if sim.kube.get_or_none(f"{CRD_PATH}/{name}") is None:
                sim.kube.create(CRD_PATH, crd)  # AlreadyExists: another writer won the race
        sim.soon(self._start_allocator, sim, replica)

    def _start_allocator(self, sim: Simulator, replica: Replica) -> None:
        config = replica.config
        state = sim.operator
        if state.leader != replica.uid:
            return  # it stopped leading while it registered the CRDs
        if config.get("ipam", "cluster-pool") != "cluster-pool":
            return  # other IPAM modes: no cluster-pool allocator (not played)
        pools = config.get("cluster-pool-ipv4-cidr", "").replace(",", " ").split()
        try:
            if not pools:
                raise ValueError("cluster-pool-ipv4-cidr must be provided when using ClusterPool")
            mask = int(config.get("cluster-pool-ipv4-mask-size", "24"))
            state.pools = [CidrSet(pool, mask) for pool in pools]
        except ValueError as error:
            # `AllocatorOperator.Init` fails, and the operator exits (`startAllocator`).
            pod = sim.pods.get(replica.uid)
            if pod is not None:
                self.stop(sim, pod)
                back_off = sim.crash_containers(
                    pod, f"Unable to init cluster-pool allocator: {error}")
                sim.later(back_off, self._restart, sim, pod.uid,
                          start_attempt(sim.nodes[pod.node], pod))
            return
        self._sync(sim, replica.uid)

    def _sync(self, sim: Simulator, leader: str) -> None:
        """The allocator's first sync: occupy every block already written, then allocate for
        the CiliumNodes without one (`NodesPodCIDRManager.Resync`)."""
        state = sim.operator
        if state.leader != leader or state.synced:
            return
        sim.write(OPERATOR_LANE, self._list_cilium_nodes, sim, leader)

    def _list_cilium_nodes(self, sim: Simulator, leader: str) -> None:
        """On the operator's lane; the listing comes back to the dispatcher."""
        sim.soon(self._synced, sim, leader, sim.kube.get_or_none(CILIUM_NODES))

    def _synced(self, sim: Simulator, leader: str, listing: Obj | None) -> None:
        state = sim.operator
        if state.leader != leader or state.synced:
            return
        if listing is None:  # the CRD is not served yet
            sim.later(0.5, self._sync, sim, leader)
            return
        # CiliumNodes the watch delivered since the listing was taken were ignored (not
        # synced yet): they count too, the listing's copy first.
        found = {i["metadata"]["name"]: i for i in listing.get("items", [])}
        for name, obj in sim.cilium_nodes.items():
            found.setdefault(name, obj)
        items = sorted(found.values(), key=lambda i: i["metadata"]["name"])
        for item in items:
            if pod_cidrs(item):
                self._upsert(sim, item)
        state.synced = True
        for item in items:
            if not pod_cidrs(item):
                self._upsert(sim, item)

    def on_cilium_node(self, sim: Simulator, event: str, obj: Obj) -> None:
        state = sim.operator
        if state.leader is None or not state.synced or not state.pools:
            return
        if event == "DELETED":
            block = state.blocks.pop(obj["metadata"]["name"], None)
            for pool in state.pools:
                if block is not None:
                    pool.release(block)
            return
        self._upsert(sim, obj)

    def _upsert(self, sim: Simulator, obj: Obj) -> None:
        """`NodesPodCIDRManager.upsertLocked`: keep a node's blocks, or allocate its first."""
        state = sim.operator
        name = obj["metadata"]["name"]
        cidrs = pod_cidrs(obj)
        known = state.blocks.get(name)
        if cidrs:
            if known is not None:
                if known not in cidrs:
                    self._report(sim, name, f"node has CIDRs allocated ({known}) that conflict "
                                 f"with requested CIDRs {cidrs}")
                return
            if not any(pool.occupy(cidrs[0]) for pool in state.pools):
                self._report(sim, name, f"CIDR {cidrs[0]} is not part of the cluster pool "
                             f"{[str(p.pool) for p in state.pools]}")
                return
            state.blocks[name] = cidrs[0]
            return
        if not state.synced:
            return  # allocation waits for the first sync (`canAllocatePodCIDRs`)
        if known is None:
            free = next((pool for pool in state.pools if not pool.full()), None)
            if free is None:
                self._report(sim, name, str(ExhaustedError(
                    f"all cluster pools {[str(p.pool) for p in state.pools]} are full")))
                return
            known = state.blocks[name] = free.allocate_next()
            log.info("operator: CiliumNode %s gets %s", name, known)
        # The operator is a process of its own: its writes wait for no kubelet's.
        sim.write(OPERATOR_LANE, sim.kube.patch, f"{CILIUM_NODES}/{name}",
                  {"spec": {"ipam": {"podCIDRs": [known]}}}, MERGE)

    @staticmethod
    def _report(sim: Simulator, name: str, error: str) -> None:
        """Allocation errors go to the CiliumNode's `status.ipam.operator-status.error`."""
        log.error("operator: CiliumNode %s: %s", name, error)
        sim.write(OPERATOR_LANE, sim.kube.patch, f"{CILIUM_NODES}/{name}/status",
                  {"status": {"ipam": {"operator-status": {"error": error}}}}, MERGE)


@functools.cache
def crd_manifests(release: CiliumRelease) -> tuple[dict[str, Any], ...]:
    """The release's CRDs, parsed once per simulator: upstream compiles them into the operator
    binary, so registering them costs no parsing (the pure-Python parser took 1 to 3 s for
    them, during which the whole simulator stood still). Callers must not modify them."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
                 for path in release.crd_files())


def pod_cidrs(obj: Obj) -> list[str]:
    cidrs: list[str] = ((obj.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []
    return cidrs


CILIUM_OPERATOR = CiliumOperator()
