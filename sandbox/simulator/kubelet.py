"""The node simulator: one process playing the kubelet and container runtime of every node.

It registers the nodes of the topology, keeps their leases fresh, runs the pods the scheduler
binds to them (Running/Ready with an IP from the node's active CNI), deletes terminating pods
after they stop, and plays reboots. All decisions happen on one dispatcher thread fed by watch
threads and timers, so the state needs no locks and an idle sandbox costs almost nothing. Its
writes go out on the node's lane (`sandbox.simulator.lanes`): in order for one node, beside
other nodes' writes, as independent kubelets send them.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.kubeapi import MERGE, Kube, Obj, condition_true
from sandbox import egress
from sandbox.simulator import containers
from sandbox.simulator.apiserver import Endpoint, dialled_endpoint, why_unreachable
from sandbox.simulator.datapath import Datapath, SimulatedDatapath, flannel_config_maps
from sandbox.simulator.faults import Fault, FaultBook, FaultFileError
from sandbox.simulator.hostfs import CNI_DIR, HostFs
from sandbox.simulator.lanes import Lanes
from sandbox.simulator.operator import CILIUM_OPERATOR, OperatorState
from sandbox.simulator.personalities import CILIUM_AGENT, OPERATOR_POD, personality_of
from sandbox.simulator.selectors import InvalidSelector, selects
from sandbox.simulator.state import NodeState, PodState, new_boot_id, now_micro, now_rfc3339
from sandbox.topology import DEFAULT_CAPACITY, NodeSpec, Topology

# cilium-config (None when missing) and the list of CiliumNodeConfigs.
AgentConfigSources = tuple[Obj | None, Obj]

log = logging.getLogger("sandbox.simulator")

# The kubelet doubles the wait after each crash up to five minutes; a sandbox caps it lower.
CRASH_BACK_OFF_CAP = 30.0
KUBE_PROXY_LABEL = ("k8s-app", "kube-proxy")  # kubeadm's kube-proxy DaemonSet pods
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CILIUM_NODES = "/apis/cilium.io/v2/ciliumnodes"
CILIUM_NODES_CRD = "ciliumnodes.cilium.io"

KUBELET_VERSION = "v1.35.4"
LEASE_DURATION_SECONDS = 40


@dataclass(frozen=True)
class Settings:
    exit_delay: float = 0.5  # how long a container takes to exit after SIGTERM
    agent_ready_delay: float = 1.0  # Cilium agent start-up until Ready
    crash_back_off: float = 2.0  # first wait before a crashed container restarts; doubles
    reboot_seconds: float = 3.0  # a node is NotReady this long while it reboots
    container_restart_seconds: float = 0.5  # after a boot, pods are NotReady this long
    lease_renew_seconds: float = 60.0
    # The status manager's periodic sync: it writes again what others changed in a status.
    status_sync_seconds: float = 10.0
    # Nodes are containers sharing this machine's kernel (kind): a reboot is a container restart,
    # which keeps the bootID and is recorded where the sandbox's `docker` reads it.
    shared_kernel: bool = False


class Simulator:
    def __init__(self, kube: Kube, topology: Topology, state_dir: Path,
                 settings: Settings | None = None,
                 datapath: Callable[[Simulator], Datapath] = SimulatedDatapath) -> None:
        self.kube = kube
        self.settings = settings or Settings()
        self.api_server = topology.api_server
        self.state_dir = state_dir
        self.faults = FaultBook(state_dir / "faults.yaml")
        self.nodes: dict[str, NodeState] = {
            spec.name: NodeState(spec=spec, host=HostFs(state_dir / "nodes" / spec.name))
            for spec in topology.nodes
        }
        self.node_uids: dict[str, str] = {}
        self.pods: dict[str, PodState] = {}
        self.cilium_blocks: dict[str, str] = {}  # the block each node's agent set up with
        self.crds: set[str] = set()  # established CustomResourceDefinitions, by name
        self.cilium_nodes: dict[str, Obj] = {}  # CiliumNodes as the watch last showed them
        self.operator = OperatorState()
        self._watching_cilium_nodes = False
        self._events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = itertools.count()
        self._stop = threading.Event()
        self.lanes = Lanes()
        self._initializing: set[str] = set()  # pods whose init containers wait for a read
        self._healthz_opener: urllib.request.OpenerDirector | None = None
        self.datapath = datapath(self)

    # ---- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        proxy = egress.EgressProxy(egress.socket_path(self.state_dir), self.datapath.egress)
        proxy.start()
        self.datapath.start()
        try:
            self._run()
        finally:
            self.datapath.close()
            proxy.stop()

    def _run(self) -> None:
        self._register_nodes()
        if self.settings.shared_kernel:
            for node in self.nodes.values():  # a restarted simulator keeps the containers' starts
                if containers.read_container(self.state_dir, node.name) is None:
                    containers.record_start(self.state_dir, node.name)
        self._load_cilium_blocks()
        for kind, path, query in (
            ("node", "/api/v1/nodes", {}),
            ("pod", "/api/v1/pods", {"fieldSelector": "spec.nodeName!="}),
            ("crd", CRD_PATH, {}),
        ):
            self._watch(kind, path, query)
        if self.datapath.follows_services:  # kube-proxy's informer
            self._watch("endpointslice", "/apis/discovery.k8s.io/v1/endpointslices", {})
        for index, node in enumerate(self.nodes.values()):
            spread = self.settings.lease_renew_seconds * index / max(len(self.nodes), 1)
            self.later(spread, self._renew_lease, node)
        self.later(self.settings.status_sync_seconds, self._sync_pod_statuses)
        log.info("simulating %d nodes", len(self.nodes))
        while not self._stop.is_set():
            self._dispatch_once()

    def _watch(self, kind: str, path: str, query: dict[str, str]) -> None:
        threading.Thread(target=self.kube.watch, name=f"watch-{kind}", daemon=True, args=(
            path, lambda event, obj: self._events.put((kind, event, obj)),
            self._stop.is_set), kwargs=query).start()

    def write(self, lane: str, action: Callable[..., Any], *args: Any) -> None:
        """Sends a write on ``lane`` (a node's name, or a controller's): after the lane's
        earlier writes, without holding the dispatcher up."""
        self.lanes.submit(lane, action, *args)

    def read(self, lane: str, fetch: Callable[[], Any], then: Callable[..., None],
             *args: Any) -> None:
        """Asks the API server ``fetch()`` on ``lane``, then runs ``then(answer, *args)`` on
        the dispatcher. For what a node's own processes read (an agent's configuration and its
        CiliumNode, flannel's ConfigMaps): every node's processes wait on their own answers side
        by side, so one slow answer holds up that node only, never the dispatcher and every
        other node. A fetch that fails for good (not a transient error, which the lane sends
        again) is logged, and its ``then`` never runs."""
        def fetch_then() -> None:
            answer = fetch()
            self.soon(then, answer, *args)

        fetch_then.__name__ = getattr(fetch, "__name__", "read")
        self.lanes.submit(lane, fetch_then)

    def soon(self, action: Callable[..., None], *args: Any) -> None:
        """Runs ``action(*args)`` on the dispatcher; callable from any thread (a lane's
        result coming back)."""
        self._events.put(("call", action, args))

    def later(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), action, args))

    def _dispatch_once(self) -> None:
        timeout = 1.0
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
        try:
            item: tuple[str, Any, Any] | None = self._events.get(timeout=timeout)
        except queue.Empty:
            item = None
        # Faults are reread before acting, so a fault written before an API call applies to it.
        try:
            if self.faults.refresh():
                self._power_cycle_recovered_nodes()
                self.datapath.faults_changed()
        except FaultFileError as error:
            log.error("%s (ignoring all faults until it is fixed)", error)
        if self.settings.shared_kernel:
            for name in containers.take_restart_requests(self.state_dir):
                if name in self.nodes:
                    self.reboot(self.nodes[name])
        if item is not None and item[0] == "call":
            self._guard(item[1], *item[2])
        elif item is not None:
            kind, event, obj = item
            handler = {"node": self._on_node, "pod": self._on_pod, "crd": self._on_crd,
                       "ciliumnode": self._on_cilium_node,
                       "endpointslice": self._on_endpoint_slice}[kind]
            self._guard(handler, event, obj)
        while self._timers and self._timers[0][0] <= time.monotonic():
            _, _, action, args = heapq.heappop(self._timers)
            self._guard(action, *args)

    def _guard(self, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except Exception:  # noqa: BLE001 - one bad object must not stop every node
            log.exception("%s failed", getattr(action, "__name__", action))

    # ---- nodes -----------------------------------------------------------------------------

    def _register_nodes(self) -> None:
        for node in self.nodes.values():
            existing = self.kube.get_or_none(f"/api/v1/nodes/{node.name}")
            if existing is not None:  # a restarted simulator keeps the node's boot
                node.boot_id = existing["status"].get("nodeInfo", {}).get("bootID") or node.boot_id
                self._remember_node(node, existing)
                continue
            created = self.kube.create("/api/v1/nodes", self._node_object(node.spec, node.boot_id))
            if created:
                self._remember_node(node, created)
            self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                             self._lease_object(node))

    def _node_object(self, spec: NodeSpec, boot_id: str) -> Obj:
        capacity = spec.capacity or DEFAULT_CAPACITY
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": spec.labels()},
            "spec": {"taints": spec.taints()} if spec.taints() else {},
            "status": {
                "capacity": capacity, "allocatable": spec.allocatable or capacity,
                "addresses": [{"type": "InternalIP", "address": spec.internal_ip},
                              {"type": "Hostname", "address": spec.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": self._node_info(boot_id),
                "conditions": [
                    *({"type": t, "status": "False", "reason": f"KubeletHas{r}",
                       "message": m, "lastHeartbeatTime": now_rfc3339(),
                       "lastTransitionTime": now_rfc3339()} for t, r, m in (
                        ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory"),
                        ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                        ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
                    )),
                    self._ready_condition(False),
                ],
            },
        }

    @staticmethod
    def _node_info(boot_id: str) -> Obj:
        return {
            "bootID": boot_id, "machineID": boot_id.replace("-", ""),
            "systemUUID": boot_id, "kernelVersion": "6.12.0-sandbox",
            "osImage": "cilium-migrate sandbox", "operatingSystem": "linux",
            "architecture": "amd64", "containerRuntimeVersion": "containerd://2.1.4",
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
        }

    @staticmethod
    def _ready_condition(ready: bool, message: str = "") -> Obj:
        if ready:
            reason, message = "KubeletReady", "kubelet is posting ready status"
        else:
            reason = "KubeletNotReady"
            message = message or ("container runtime network not ready: NetworkReady=false "
                                  "reason:NetworkPluginNotReady message:Network plugin returns "
                                  "error: cni plugin not initialized")
        return {"type": "Ready", "status": "True" if ready else "False", "reason": reason,
                "message": message, "lastHeartbeatTime": now_rfc3339(),
                "lastTransitionTime": now_rfc3339()}

    def _lease_object(self, node: NodeState) -> Obj:
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node.name,
                     "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now_micro()},
        }

    def _renew_lease(self, node: NodeState) -> None:
        if node.up:  # a rebooting node's kubelet is not there to renew
            self.write(node.name, self._patch_or_create_lease, node.name,
                       self._lease_object(node))
        self.later(self.settings.lease_renew_seconds, self._renew_lease, node)

    def _patch_or_create_lease(self, name: str, lease: Obj) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        if self.kube.patch(path, {"spec": {"renewTime": lease["spec"]["renewTime"]}},
                           MERGE) is None:
            self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                             lease)

    def _remember_node(self, node: NodeState, obj: Obj) -> bool:
        """Records what the API knows of the node; True when its podCIDR just arrived."""
        self.node_uids[node.name] = obj["metadata"]["uid"]
        node.labels = obj["metadata"].get("labels") or {}
        pod_cidr = obj.get("spec", {}).get("podCIDR")
        if pod_cidr and pod_cidr != node.pod_cidr:
            node.pod_cidr = pod_cidr
            self.datapath.pod_cidr_assigned(node)
            return True
        return False

    def _on_node(self, event: str, obj: Obj) -> None:
        node = self.nodes.get(obj["metadata"]["name"])
        if node is None or event == "DELETED":
            return
        if self._remember_node(node, obj) or node.reported_ready is None:
            self.network_changed(node)

    # ---- Cilium objects: what the agents' and the operator's informers see -----------------

    def _on_crd(self, event: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if event == "DELETED" or not condition_true(obj, "Established"):
            self.crds.discard(name)
            return
        if name in self.crds:
            return
        self.crds.add(name)
        if name == CILIUM_NODES_CRD and not self._watching_cilium_nodes:
            self._watching_cilium_nodes = True  # the watch outlives a deleted CRD: it retries
            self._watch("ciliumnode", CILIUM_NODES, {})
        for node in self.nodes.values():
            CILIUM_AGENT.advance(self, node)

    def _on_cilium_node(self, event: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if event == "DELETED":
            self.cilium_nodes.pop(name, None)
        else:
            self.cilium_nodes[name] = obj
        CILIUM_OPERATOR.on_cilium_node(self, event, obj)
        self.datapath.cilium_nodes_changed()
        if event != "DELETED" and name in self.nodes:
            CILIUM_AGENT.advance(self, self.nodes[name])

    def _on_endpoint_slice(self, event: str, obj: Obj) -> None:
        self.datapath.endpoint_slices_changed()

    def network_changed(self, node: NodeState) -> None:
        """Reports the node's readiness and starts pods that were waiting for a network."""
        ready = node.network_ready()
        if ready != node.reported_ready and node.up:
            self._report_ready(node, ready)
        for uid in sorted(node.waiting_for_network):
            pod = self.pods.get(uid)
            if pod is not None and not pod.started:
                self._start_pod(pod)

    def cni_dir_changed(self, node: NodeState) -> None:
        """Something wrote to the node's CNI directory: a running agent that watches it (see
        `CiliumAgent.on_cni_dir_changed`) reacts first, then the node's network is re-read."""
        CILIUM_AGENT.on_cni_dir_changed(self, node)
        self.network_changed(node)

    def _report_ready(self, node: NodeState, ready: bool, message: str = "") -> None:
        node.reported_ready = ready
        self.write(node.name, self.kube.patch, f"/api/v1/nodes/{node.name}/status", {"status": {
            "conditions": [self._ready_condition(ready, message)],
            "nodeInfo": self._node_info(node.boot_id)}})

    def reboot(self, node: NodeState) -> None:
        """A machine's reboot, or with a shared kernel its container's restart.

        A machine's kubelet reports NotReady as it shuts down (graceful node shutdown); a kind
        node's kubelet is simply stopped, so the node keeps its last, now stale, status. Either
        way the kubelet is gone until `_boot`: no lease renewals, no pod status updates.
        """
        log.info("node %s: %s", node.name, "container restarting" if self.settings.shared_kernel
                 else "rebooting")
        node.up = False
        if not self.settings.shared_kernel:
            self._report_ready(node, False, "node is rebooting")
        for pod in self.pods_on(node):
            if pod.started:
                self._stop_containers(pod)
        self.datapath.node_going_down(node)
        if self.settings.shared_kernel:
            started = containers.record_start(self.state_dir, node.name)
            log.info("node %s: container started at %s", node.name, started.startedAt)
        if self.faults.has(node.name, Fault.REBOOT_NEVER_COMPLETES):
            log.info("node %s: fault %s, staying down", node.name, Fault.REBOOT_NEVER_COMPLETES)
            node.stuck_in_reboot = True
            return
        self.later(self.settings.reboot_seconds, self._boot, node)

    def _power_cycle_recovered_nodes(self) -> None:
        """Clearing reboot-never-completes on a stuck node is like pressing its power button."""
        for node in self.nodes.values():
            if node.stuck_in_reboot and not self.faults.has(node.name,
                                                            Fault.REBOOT_NEVER_COMPLETES):
                node.stuck_in_reboot = False
                self.later(self.settings.reboot_seconds, self._boot, node)

    def _boot(self, node: NodeState) -> None:
        if not self.settings.shared_kernel:  # the host's kernel did not restart: same boot_id
            node.boot_id = new_boot_id()
        node.up = True
        log.info("node %s: kubelet up (bootID %s)", node.name, node.boot_id)
        self.datapath.node_booted(node)
        self._report_ready(node, node.network_ready())
        # Host-network pods (the CNI agents among them) come first: the others need a network.
        for pod in sorted(self.pods_on(node), key=lambda p: not p.host_network):
            if pod.terminating:
                self._finish_termination(pod.uid)
            elif not pod.started and not pod.completed and self._phase(pod) not in (
                    "Succeeded", "Failed"):
                pod.restarts += 1
                self._restart_after_boot(pod)

    def _restart_after_boot(self, pod: PodState) -> None:
        """The booted kubelet finds the pod's containers dead with the old boot: it reports the
        pod NotReady, and starts the containers again a moment later. In that window a
        DaemonSet's numberReady is one short, and it catches up only after its controller
        has seen the pod Ready again."""
        self.set_pod_ready(pod, False)
        self.later(self.settings.container_restart_seconds, self.start_if_still_down, pod.uid)

    def start_if_still_down(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None and not pod.started and not pod.terminating:
            self._start_pod(pod)

    def pods_on(self, node: NodeState) -> list[PodState]:
        return [p for p in self.pods.values() if p.node == node.name]

    # ---- pods ------------------------------------------------------------------------------

    @staticmethod
    def _phase(pod: PodState) -> str:
        phase: str = pod.obj.get("status", {}).get("phase", "Pending")
        return phase

    def _on_pod(self, event: str, obj: Obj) -> None:
        meta = obj["metadata"]
        node = self.nodes.get(obj.get("spec", {}).get("nodeName", ""))
        if node is None:
            return
        uid = meta["uid"]
        if event == "DELETED":
            self._forget(uid)
            return
        pod = self.pods.get(uid)
        if pod is None:
            pod = self.pods[uid] = PodState(uid, meta["namespace"], meta["name"], node.name, obj)
            self._adopt(pod, node)
        pod.obj = obj
        phase = self._phase(pod)
        if pod.completed or phase in ("Succeeded", "Failed"):
            if meta.get("deletionTimestamp"):
                self._delete_now(pod)
            return
        if meta.get("deletionTimestamp"):
            if not pod.terminating:
                self._begin_termination(pod, node)
        elif not pod.started:
            self._start_pod(pod)

    def _adopt(self, pod: PodState, node: NodeState) -> None:
        """A pod already running when the simulator (re)started keeps its IP and containers."""
        status = pod.obj.get("status", {})
        if status.get("phase") == "Running" and (pod.host_network or status.get("podIP")):
            pod.started = True
            pod.ip = status.get("podIP")
            pod.start_time = status.get("startTime")
            pod.container_statuses = status.get("containerStatuses") or []
            pod.restarts = max([c.get("restartCount", 0) for c in pod.container_statuses] or [0])
            self.datapath.pod_adopted(node, pod)
            if personality_of(pod).name == "flanneld":
                node.flannel_running = True
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            if personality_of(pod).name == "cilium-agent":
                node.agent_ready = ready
                if ready:
                    node.agent_uid = pod.uid
                    node.agent_config = self.cilium_agent_config(pod.namespace, node)
                    block = self.cilium_blocks.get(node.name)
                    if block:
                        self.datapath.cilium_set_up(node, block)
                else:  # it was still starting: it goes on
                    CILIUM_AGENT.resume(self, node, pod)
            if personality_of(pod) is OPERATOR_POD:
                OPERATOR_POD.on_started(self, node, pod)  # reads its config, joins the election

    def _allocate_ip(self, pod: PodState, node: NodeState) -> str | None:
        """The node's InternalIP for host-network pods, else an IP from the node's active CNI
        (None while that CNI cannot serve yet)."""
        if pod.host_network:
            return node.spec.internal_ip
        return self.datapath.pod_address(node, pod)

    def _start_pod(self, pod: PodState) -> None:
        node = self.nodes[pod.node]
        if not node.up:
            return  # started when the node boots
        # Init containers ran already for a pod that waits for its network.
        copies = [] if pod.uid in node.waiting_for_network else self._init_copies(pod)
        if copies:  # the kubelet reads the ConfigMaps first; the pod goes on with the answer
            if pod.uid not in self._initializing:
                self._initializing.add(pod.uid)
                self.read(node.name, functools.partial(self._read_copies, pod.namespace, copies),
                          self._initialized, pod.uid)
            return
        self._start_initialized(pod, node)

    def _initialized(self, contents: list[tuple[str, str]], uid: str) -> None:
        """The init containers copied ``contents`` (file name, text) into the CNI directory."""
        self._initializing.discard(uid)
        pod = self.pods.get(uid)
        if pod is None or pod.started or pod.terminating or pod.completed:
            return
        node = self.nodes[pod.node]
        if not node.up:
            return  # its boot starts it again
        for name, content in contents:
            node.host.write_cni(name, content)
            self.cni_dir_changed(node)
        self._start_initialized(pod, node)

    def _start_initialized(self, pod: PodState, node: NodeState) -> None:
        ip = self._allocate_ip(pod, node)
        if ip is None:
            node.waiting_for_network.add(pod.uid)
            return
        node.waiting_for_network.discard(pod.uid)
        pod.ip, pod.started = ip, True
        pod.start_time = pod.start_time or now_rfc3339()
        personality = personality_of(pod)
        ready = personality.ready_at_start(self, node, pod)
        status = self._running_status(pod, node, ready)
        pod.container_statuses = status["containerStatuses"]
        # The whole status, lists replaced: a strategic merge would keep the previous boot's
        # address beside the new one in podIPs (merge key `ip`), which the API server refuses.
        # The kubelet's own patch deletes the old entries (a two-way merge patch).
        self.write(node.name, self.kube.patch, pod.path + "/status", {"status": status}, MERGE)
        personality.on_started(self, node, pod)

    def _running_status(self, pod: PodState, node: NodeState, ready: bool) -> Obj:
        started_at = now_rfc3339()
        containers = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "",
            "containerID": f"containerd://{pod.uid[:8]}{index}{pod.restarts}{node.boot_id[:8]}",
            "ready": ready, "started": True, "restartCount": pod.restarts,
            "state": {"running": {"startedAt": started_at}},
        } for index, c in enumerate(pod.containers())]
        inits = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
            "restartCount": 0, "containerID": f"containerd://{pod.uid[:8]}i{index}",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                     "startedAt": started_at, "finishedAt": started_at}},
        } for index, c in enumerate(pod.spec.get("initContainers") or [])]
        status: Obj = {
            "phase": "Running", "hostIP": node.spec.internal_ip,
            "hostIPs": [{"ip": node.spec.internal_ip}],
            "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "startTime": pod.start_time,
            "conditions": self._pod_conditions(ready),
            "containerStatuses": containers,
        }
        if inits:
            status["initContainerStatuses"] = inits
        return status

    @staticmethod
    def _pod_conditions(ready: bool) -> list[Obj]:
        value = "True" if ready else "False"
        return [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
                for t, s in (("PodReadyToStartContainers", "True"), ("Initialized", "True"),
                             ("ContainersReady", value), ("Ready", value))]

    def set_pod_ready(self, pod: PodState, ready: bool) -> None:
        # From what we wrote, not from pod.obj: with many nodes the watch can lag behind our
        # own writes, and an old copy would put the previous boot's containers back.
        statuses = [{**c, "ready": ready} for c in pod.container_statuses]
        pod.container_statuses = statuses
        if ready:
            pod.crashes = 0
        self.write(pod.node, self.kube.patch, pod.path + "/status", {"status": {
            "conditions": self._pod_conditions(ready), "containerStatuses": statuses}})

    def _sync_pod_statuses(self) -> None:
        """Every 10 s each kubelet's status manager compares the statuses the API server holds
        with its own and writes its own again where they differ. That is how a pod's Ready
        condition comes back after the node lifecycle controller set it False (it does so for
        every pod of a node it saw NotReady, such as one rebooting), while the kubelet, up again,
        had already reported the pod Ready: without this the pod stays unready for good, and a
        PodDisruptionBudget counting it blocks every later drain."""
        self.later(self.settings.status_sync_seconds, self._sync_pod_statuses)
        for pod in list(self.pods.values()):
            node = self.nodes[pod.node]
            if (not node.up or not pod.started or pod.terminating or pod.completed
                    or not pod.container_statuses):
                continue
            ours = all(c.get("ready") for c in pod.container_statuses)
            held = next((c.get("status") == "True" for c in
                         pod.obj.get("status", {}).get("conditions") or []
                         if c.get("type") == "Ready"), None)
            if held is not None and held != ours:
                log.info("pod %s/%s: Ready is %s on the server, the kubelet says %s: writing it "
                         "again", pod.namespace, pod.name, held, ours)
                self.set_pod_ready(pod, ours)

    def crash_containers(self, pod: PodState, message: str) -> float:
        """The pod's containers exit with an error (``message`` as their termination message)
        and wait in CrashLoopBackOff; returns how long until the kubelet restarts them."""
        pod.restarts += 1
        pod.crashes += 1
        now = now_rfc3339()
        statuses = [{
            **c, "ready": False, "started": False, "restartCount": pod.restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message":
                                  f"back-off restarting failed container={c['name']} "
                                  f"pod={pod.name}"}},
            "lastState": {"terminated": {
                "exitCode": 1, "reason": "Error", "message": message[:4096], "finishedAt": now,
                "startedAt": (c.get("state") or {}).get("running", {}).get("startedAt", now)}},
        } for c in pod.container_statuses]
        pod.container_statuses = statuses
        self.write(pod.node, self.kube.patch, pod.path + "/status", {"status": {
            "conditions": self._pod_conditions(False), "containerStatuses": statuses}})
        return min(self.settings.crash_back_off * 2 ** (pod.crashes - 1), CRASH_BACK_OFF_CAP)

    def restart_containers(self, pod: PodState) -> None:
        """The kubelet starts crashed containers again (not Ready until they say so)."""
        node = self.nodes[pod.node]
        now = now_rfc3339()
        statuses = [{
            **c, "ready": False, "started": True, "state": {"running": {"startedAt": now}},
            "containerID": f"containerd://{pod.uid[:8]}{index}{pod.restarts}{node.boot_id[:8]}",
        } for index, c in enumerate(pod.container_statuses)]
        pod.container_statuses = statuses
        self.write(pod.node, self.kube.patch, pod.path + "/status",
                   {"status": {"containerStatuses": statuses}})

    def complete_pod(self, pod: PodState, exit_code: int, message: str) -> None:
        """A run-to-completion pod ends; ``message`` becomes its termination message."""
        node = self.nodes[pod.node]
        now = now_rfc3339()
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "message": message[:4096], "startedAt": pod.start_time or now,
                      "finishedAt": now}
        self.write(node.name, self.kube.patch, pod.path + "/status", {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": self._pod_conditions(False),
            "containerStatuses": [{
                "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                "started": False, "restartCount": pod.restarts,
                "containerID": f"containerd://{pod.uid[:8]}{index}",
                "state": {"terminated": terminated}}
                for index, c in enumerate(pod.containers())],
        }})
        self._release_ip(pod, node)
        pod.started = False
        pod.completed = True

    def _init_copies(self, pod: PodState) -> list[tuple[str, str, str]]:
        """The init containers that copy a ConfigMap key into the host's CNI directory, as
        (file name there, ConfigMap, key).

        That is how flannel installs ``10-flannel.conflist`` (its ``install-cni`` container,
        in the current and the older kube-system manifests alike).
        """
        volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
        copies = []
        for container in pod.spec.get("initContainers") or []:
            paths = [a for a in (*(container.get("command") or []), *(container.get("args") or []))
                     if a.startswith("/")]
            if len(paths) < 2:
                continue
            source, target = paths[-2], paths[-1]
            host_target = self._mounted(container, volumes, target, "hostPath")
            config_key = self._mounted(container, volumes, source, "configMap")
            if host_target is None or config_key is None:
                continue
            host_path, (config_name, key) = host_target[0], config_key
            if host_path.startswith(CNI_DIR + "/"):
                copies.append((host_path.rsplit("/", 1)[-1], config_name, key))
        return copies

    def _read_copies(self, namespace: str,
                     copies: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """On the node's lane: the ConfigMap keys ``copies`` name, as (file name, text)."""
        contents = []
        for name, config_name, key in copies:
            config_map = self.kube.get_or_none(
                f"/api/v1/namespaces/{namespace}/configmaps/{config_name}")
            content = ((config_map or {}).get("data") or {}).get(key)
            if content is not None:
                contents.append((name, content))
        return contents

    @staticmethod
    def _mounted(container: Obj, volumes: dict[str, Obj], path: str,
                 kind: str) -> tuple[str, str] | None:
        """Resolves ``path`` through the container's mounts to a hostPath or ConfigMap key."""
        for mount in container.get("volumeMounts") or []:
            mount_path = mount["mountPath"].rstrip("/")
            if not path.startswith(mount_path + "/"):
                continue
            volume = volumes.get(mount["name"], {})
            rest = path[len(mount_path) + 1:]
            if kind == "hostPath" and "hostPath" in volume:
                return volume["hostPath"]["path"].rstrip("/") + "/" + rest, ""
            if kind == "configMap" and "configMap" in volume:
                return volume["configMap"]["name"], rest
        return None

    def _stop_containers(self, pod: PodState) -> None:
        node = self.nodes[pod.node]
        pod.started = False
        self._release_ip(pod, node)
        personality_of(pod).on_stopped(self, node, pod)

    def _release_ip(self, pod: PodState, node: NodeState) -> None:
        if not pod.host_network:
            self.datapath.pod_stopped(node, pod)
        pod.ip = None

    def _begin_termination(self, pod: PodState, node: NodeState) -> None:
        pod.terminating = True
        node.waiting_for_network.discard(pod.uid)
        if not pod.started:
            if node.up:
                self._delete_now(pod)
            return  # a node that is down deletes it when it boots
        grace = float(pod.obj["metadata"].get("deletionGracePeriodSeconds") or 0)
        if self.faults.has(node.name, Fault.IGNORE_TERMINATION):
            delay = grace  # SIGTERM ignored: the runtime kills it when the grace period ends
        else:
            delay = min(grace, self.settings.exit_delay)
        self.later(delay, self._finish_termination, pod.uid)

    def _finish_termination(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is None or not self.nodes[pod.node].up:
            return
        if pod.started:
            self._stop_containers(pod)
        self._delete_now(pod)

    def _delete_now(self, pod: PodState) -> None:
        self.write(pod.node, self.kube.delete, pod.path, {"gracePeriodSeconds": 0,
                                                          "preconditions": {"uid": pod.uid}})

    def _forget(self, uid: str) -> None:
        pod = self.pods.pop(uid, None)
        if pod is None:
            return
        node = self.nodes[pod.node]
        node.waiting_for_network.discard(uid)
        if pod.started:
            self._stop_containers(pod)

    # ---- cluster knowledge used by personalities -------------------------------------------

    def _load_cilium_blocks(self) -> None:
        listing = self.kube.get_or_none("/apis/cilium.io/v2/ciliumnodes") or {}
        for item in listing.get("items", []):
            cidrs = (item.get("spec", {}).get("ipam") or {}).get("podCIDRs") or []
            if cidrs:
                self.cilium_blocks[item["metadata"]["name"]] = cidrs[0]

    def cilium_agent_config(self, namespace: str, node: NodeState) -> dict[str, str]:
        return self.agent_config_from(self.agent_config_sources(namespace), node)

    def agent_config_sources(self, namespace: str) -> AgentConfigSources:
        """What the agent's `config` init container (`cilium-dbg build-config`) reads:
        cilium-config and the CiliumNodeConfigs."""
        config_map = self.kube.get_or_none(
            f"/api/v1/namespaces/{namespace}/configmaps/cilium-config")
        listing = self.kube.get_or_none(
            f"/apis/cilium.io/v2/namespaces/{namespace}/ciliumnodeconfigs") or {}
        return config_map, listing

    @staticmethod
    def agent_config_from(sources: AgentConfigSources, node: NodeState) -> dict[str, str]:
        """cilium-config, then matching CiliumNodeConfigs in name order (later ones win)."""
        config_map, listing = sources
        config: dict[str, str] = dict((config_map or {}).get("data") or {})
        for item in sorted(listing.get("items", []), key=lambda i: i["metadata"]["name"]):
            spec = item.get("spec", {})
            try:
                matches = selects(spec.get("nodeSelector"), node.labels)
            except InvalidSelector:
                continue  # the agent skips a CiliumNodeConfig whose selector does not parse
            if matches:
                config.update(spec.get("defaults") or {})
        return config

    def api_server_problem(self, node: NodeState, pod: PodState) -> str | None:
        """Why ``pod``'s in-cluster client cannot reach the API server from ``node``; None
        when it can (or when the topology predates the address, so nothing can be judged)."""
        if self.api_server is None:
            return None
        endpoint = dialled_endpoint(pod.env)
        if isinstance(endpoint, str):
            return endpoint
        reason = why_unreachable(endpoint, self.api_server, self._kube_proxy_ready(node),
                                 self.api_service_endpoints)
        return None if reason is None else f"cannot reach the API server at {endpoint}: {reason}"

    def _kube_proxy_ready(self, node: NodeState) -> bool:
        key, value = KUBE_PROXY_LABEL
        return any(p.labels.get(key) == value and p.started and not p.terminating
                   and p.container_statuses and all(c.get("ready") for c in p.container_statuses)
                   for p in self.pods_on(node))

    def api_service_endpoints(self) -> set[Endpoint]:
        """Ready addresses and ports of the `kubernetes` Service, as kube-proxy reads them."""
        listing = self.kube.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                                labelSelector="kubernetes.io/service-name=kubernetes")
        found: set[Endpoint] = set()
        for item in listing.get("items", []):
            ports = [p["port"] for p in item.get("ports") or [] if p.get("port")]
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                found |= {Endpoint(address, port) for address in endpoint.get("addresses", [])
                          for port in ports}
        return found

    def service_cluster_ip(self, namespace: str, name: str) -> str | None:
        """The Service's ClusterIP; None when it does not exist or is headless."""
        service = self.kube.get_or_none(f"/api/v1/namespaces/{namespace}/services/{name}")
        address = ((service or {}).get("spec") or {}).get("clusterIP")
        return address if address and address != "None" else None

    def flannel_net_conf(self, pod: PodState) -> dict[str, Any]:
        return self.read_flannel_net_conf(pod.namespace, flannel_config_maps(pod))

    def read_flannel_net_conf(self, namespace: str, config_maps: list[str]) -> dict[str, Any]:
        """flanneld's net-conf.json from the first of the pod's ConfigMaps that has one."""
        for name in config_maps:
            config_map = self.kube.get_or_none(
                f"/api/v1/namespaces/{namespace}/configmaps/{name}") or {}
            raw = (config_map.get("data") or {}).get("net-conf.json")
            if raw:
                try:
                    parsed: dict[str, Any] = json.loads(raw)
                    return parsed
                except ValueError:
                    log.error("%s/%s: net-conf.json is not JSON", namespace, name)
        return {}

    def healthz_answer(self) -> tuple[int | None, tuple[str, ...]]:
        """The API server's own answer to an anonymous GET /healthz, certificate unchecked, as
        a probe's wget asks it: (status, nothing) or (None, what wget would say instead)."""
        if self._healthz_opener is None:  # one TLS context: building one loads every CA
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # No proxy: the API server is on loopback, whatever the environment says.
            self._healthz_opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
        try:
            with self._healthz_opener.open(f"{self.kube.server}/healthz", timeout=5) as answer:
                return int(answer.status), ()
        except urllib.error.HTTPError as error:
            return error.code, ()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return None, (f"wget: can't connect to remote host: {reason}",)
