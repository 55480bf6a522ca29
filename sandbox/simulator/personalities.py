"""What particular pods do on a node, beyond "run and be Ready".

No container runs in the sandbox, so the simulator recognises the few pods whose effects on the
node matter to a migration and plays those effects:

- ``FlannelDaemon``: flanneld, which makes the flannel CNI plugin usable on its node.
- ``CiliumAgent``: the Cilium agent (the chart DaemonSet's container ``cilium-agent``). At pod
  start it reads cilium-config plus the CiliumNodeConfigs selecting its node; it connects to
  the API server where its env says (``sandbox.simulator.apiserver``), and when it cannot, it
  exits and crash-loops, never Ready. It then waits for the operator's CRDs, creates its
  CiliumNode and, in cluster-pool mode, waits for the operator to write the node's block into
  it. Only then it sets up the node and is Ready: when ``write-cni-conf-when-ready`` names a
  file it writes its CNI config, parking the others with ``cni-exclusive``; while it runs it
  rewrites them on any change in the CNI directory.
- ``OperatorPod``: the Cilium operator (container ``cilium-operator``), played by
  ``sandbox.simulator.operator``: leader election, CRD registration, cluster-pool IPAM.
- ``HostShell``: a privileged, host-PID pod running ``nsenter ... -- CMD`` on its node (the
  ``node-shell`` reboot strategy, and the file moves of a rollback); CMD runs on the host.
- ``Probe``: the product's connectivity probe (label ``cilium-migrate.io/probe=true``, env
  ``PROBE_PEERS`` with comma-separated peer IPs). It ends with the report the probe script would
  write as its termination message, in the shape `plan.contract.ProbeReport` documents; exit 0
  only if the API server answered and every peer replied.

Everything else is a plain workload: Running and Ready once it has an IP.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import TYPE_CHECKING

from kubernetes.client.rest import ApiException

from activities.kubeapi import Kube, Obj
from sandbox.simulator.faults import Fault
from sandbox.simulator.hostfs import CILIUM_CONFLIST, CNI_DIR, run_host_command
from sandbox.simulator.operator import CILIUM_OPERATOR, operator_container, pod_cidrs
from sandbox.simulator.state import NodeState, PodState, start_attempt

if TYPE_CHECKING:
    from sandbox.simulator.kubelet import AgentConfigSources, Simulator

log = logging.getLogger("sandbox.simulator")

PROBE_LABEL = "cilium-migrate.io/probe"
DEFAULT_CILIUM_CONF_PATH = f"/host{CNI_DIR}/{CILIUM_CONFLIST}"
CILIUM_CONFLIST_CONTENT = json.dumps({
    "cniVersion": "0.3.1", "name": "cilium",
    "plugins": [{"type": "cilium-cni", "enable-debug": False}],
}, indent=2) + "\n"


class Personality:
    name = "workload"

    def matches(self, pod: PodState) -> bool:
        return True

    def ready_at_start(self, sim: Simulator, node: NodeState, pod: PodState) -> bool:
        return True

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        """Containers are running with their IP."""

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        """Containers stopped (termination, reboot)."""


class FlannelDaemon(Personality):
    name = "flanneld"

    def matches(self, pod: PodState) -> bool:
        return any("flanneld" in " ".join(c.get("command") or []) for c in pod.containers())

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        sim.datapath.flannel_started(node, pod)

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        sim.datapath.flannel_stopped(node, pod)


class KubeProxy(Personality):
    """kubeadm's kube-proxy DaemonSet pod: it programs the node's Services (the datapath says
    how; the API server endpoint judgement reads its readiness)."""

    name = "kube-proxy"

    def matches(self, pod: PodState) -> bool:
        return pod.labels.get("k8s-app") == "kube-proxy"

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        sim.datapath.service_proxy_started(node)


class CiliumAgent(Personality):
    """The agent of the real chart's DaemonSet: the pod's `cilium-agent` container.

    At pod start (the `config` init container, `cilium-dbg build-config`) it resolves its
    configuration; a crash-restart of the container keeps it, a new pod or a reboot resolves it
    again. Its start then follows `daemon/cmd/daemon.go` (`newDaemon`): reach the API server,
    wait for the operator's CRDs, create or update its CiliumNode, and in cluster-pool mode
    wait for the operator to write the node's podCIDRs; only then set up the node and be Ready.
    """

    name = "cilium-agent"

    def matches(self, pod: PodState) -> bool:
        return any(c.get("name") == "cilium-agent" for c in pod.containers())

    def ready_at_start(self, sim: Simulator, node: NodeState, pod: PodState) -> bool:
        return False  # readiness comes after the agent has set up the node, below

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        node.agent_ready = False
        node.agent_stage = None
        self.resume(sim, node, pod)

    def resume(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        """Starts the agent's start-up; also what a restarted simulator does with an agent it
        finds running but not Ready. Overrides are read once, at pod start: a new
        CiliumNodeConfig needs a new agent pod."""
        node.agent_uid = pod.uid
        node.agent_stage = "config"
        sim.read(node.name, functools.partial(sim.agent_config_sources, pod.namespace),
                 self._configured, sim, node, pod.uid, start_attempt(node, pod))

    def _configured(self, sources: AgentConfigSources, sim: Simulator, node: NodeState,
                    uid: str, attempt: tuple[str, int]) -> None:
        """The `config` init container has its answers: the agent container starts."""
        pod = self._current(sim, node, uid)
        if pod is None or node.agent_stage != "config" or attempt != start_attempt(node, pod):
            return  # stopped, or started afresh since (a reboot): that start reads again
        node.agent_config = sim.agent_config_from(sources, node)
        node.agent_stage = None
        sim.later(sim.settings.agent_ready_delay, self._connect, sim, node, uid)

    def _current(self, sim: Simulator, node: NodeState, uid: str) -> PodState | None:
        pod = sim.pods.get(uid)
        if pod is None or not pod.started or pod.terminating or node.agent_uid != uid:
            return None
        return pod

    def _connect(self, sim: Simulator, node: NodeState, uid: str) -> None:
        pod = self._current(sim, node, uid)
        if pod is None:
            return
        if sim.faults.has(node.name, Fault.AGENT_NEVER_READY):
            return
        # The agent's first act is to connect to the API server; without it the agent exits,
        # and the kubelet restarts it after a back-off (CrashLoopBackOff).
        problem = sim.api_server_problem(node, pod)
        if problem is not None:
            self._crash(sim, node, pod, problem)
            return
        node.agent_stage = "crds"
        timeout = go_duration(node.agent_config.get("crd-wait-timeout", "5m"), 300.0)
        sim.later(timeout, self._crd_wait_timed_out, sim, node, uid, start_attempt(node, pod))
        self.advance(sim, node)

    def _crash(self, sim: Simulator, node: NodeState, pod: PodState, message: str) -> None:
        log.info("node %s: agent %s: %s", node.name, pod.name, message)
        node.agent_stage = None
        back_off = sim.crash_containers(pod, message)
        sim.later(back_off, self._restart, sim, node, pod.uid, start_attempt(node, pod))

    def _crd_wait_timed_out(self, sim: Simulator, node: NodeState, uid: str,
                            attempt: tuple[str, int]) -> None:
        """`synced.SyncCRDs` gives up after `crd-wait-timeout` and the agent exits."""
        pod = self._current(sim, node, uid)
        if pod is None or node.agent_stage != "crds" or attempt != start_attempt(node, pod):
            return
        missing = sorted(set(agent_crds(node.agent_config)) - sim.crds)
        self._crash(sim, node, pod, (
            f"Unable to find all Cilium CRDs necessary within "
            f"{node.agent_config.get('crd-wait-timeout', '5m0s')} timeout. Please ensure that "
            "Cilium Operator is running, as it's responsible for registering all the Cilium "
            f"CRDs. The following CRDs were not found: {missing}"))

    def advance(self, sim: Simulator, node: NodeState) -> None:
        """Goes on with the start once what the agent waits for is there (called at each
        CRD or CiliumNode event: the agent's informers)."""
        if node.agent_uid is None:
            return
        pod = self._current(sim, node, node.agent_uid)
        if pod is None:
            return
        if node.agent_stage == "crds":
            if not set(agent_crds(node.agent_config)) <= sim.crds:
                return  # still waiting for the operator to register them
            node.agent_stage = "ciliumnode"
            meta = {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name,
                                         "uid": sim.node_uids.get(node.name, "")}],
                    "labels": dict(node.labels)}
            addresses = [{"type": "InternalIP", "ip": node.spec.internal_ip}]
            sim.read(node.name, functools.partial(_update_cilium_node, sim.kube, node.name,
                                                  meta, addresses),
                     self._cilium_node_updated, sim, node, pod.uid, start_attempt(node, pod),
                     sim.cilium_nodes.get(node.name))
            return
        if node.agent_stage == "pod-cidrs":
            cidrs = pod_cidrs(sim.cilium_nodes.get(node.name) or {})
            if cidrs:  # `WaitForNodeInformation`: the first IPv4 podCIDR is the alloc range
                node.agent_stage = None
                self._set_up(sim, node, pod, cidrs[0])

    def _cilium_node_updated(self, cilium_node: Obj | None, sim: Simulator, node: NodeState,
                             uid: str, attempt: tuple[str, int], seen: Obj | None) -> None:
        pod = self._current(sim, node, uid)
        if pod is None or node.agent_stage != "ciliumnode" or attempt != start_attempt(node, pod):
            return
        # The watch may already have brought a newer copy (the operator's podCIDRs): keep it.
        if cilium_node is not None and sim.cilium_nodes.get(node.name) is seen:
            sim.cilium_nodes[node.name] = cilium_node
        if node.agent_config.get("ipam", "cluster-pool") != "cluster-pool":
            node.agent_stage = None
            self._set_up(sim, node, pod, None)
            return
        node.agent_stage = "pod-cidrs"
        self.advance(sim, node)

    def _set_up(self, sim: Simulator, node: NodeState, pod: PodState, block: str | None) -> None:
        if block is not None:
            sim.cilium_blocks[node.name] = block
        problem = sim.datapath.cilium_set_up(node, block)
        if problem is not None:  # e.g. its tunnel device cannot bind the port: the agent exits
            self._crash(sim, node, pod, problem)
            return
        self._write_cni_config(node)
        node.agent_ready = True
        sim.set_pod_ready(pod, True)
        sim.network_changed(node)

    @staticmethod
    def _cni_conf_name(config: dict[str, str]) -> str | None:
        """The CNI config file the agent manages; None when it manages none: upstream's CNI
        config manager is off unless `write-cni-conf-when-ready` names a path
        (daemon/cmd/cni/config.go, `Start`)."""
        path = config.get("write-cni-conf-when-ready", "")
        return path.rsplit("/", 1)[-1] if path else None

    def _write_cni_config(self, node: NodeState) -> None:
        """`setupCNIConfFile`: (re)write our config when it differs, then, with
        `cni-exclusive`, park every other CNI config as `*.cilium_bak` (`cleanupOtherCNI`)."""
        name = self._cni_conf_name(node.agent_config)
        if name is None:
            return
        path = node.host.cni_dir / name
        if not path.exists() or path.read_text() != CILIUM_CONFLIST_CONTENT:
            node.host.write_cni(name, CILIUM_CONFLIST_CONTENT)
        if node.agent_config.get("cni-exclusive") == "true":
            node.host.back_up_others(keep=name)

    def on_cni_dir_changed(self, sim: Simulator, node: NodeState) -> None:
        """A running agent with `cni-exclusive` watches the CNI directory (fsnotify) and, on
        any change, writes its config again and parks the others (`watchForDirectoryChanges`
        triggering the write controller). Removing the node's label changes nothing here
        until the agent restarts: it read its configuration when it started."""
        if node.agent_uid is None or not node.agent_ready:
            return
        if node.agent_config.get("cni-exclusive") == "true":
            self._write_cni_config(node)

    def _restart(self, sim: Simulator, node: NodeState, uid: str,
                 crashed: tuple[str, int]) -> None:
        pod = self._current(sim, node, uid)
        if pod is None or crashed != start_attempt(node, pod):
            return  # gone, or started afresh since (a reboot): that start has its own timer
        sim.restart_containers(pod)
        sim.later(sim.settings.agent_ready_delay, self._connect, sim, node, uid)

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        if node.agent_uid != pod.uid:
            return
        node.agent_uid = None
        node.agent_ready = False
        node.agent_stage = None
        if node.agent_config.get("cni-uninstall") == "true":
            path = node.agent_config.get("write-cni-conf-when-ready") or DEFAULT_CILIUM_CONF_PATH
            node.host.remove_cni(path.rsplit("/", 1)[-1])
            sim.network_changed(node)


def _update_cilium_node(kube: Kube, name: str, meta: Obj, addresses: list[Obj]) -> Obj | None:
    """`NodeDiscovery.updateCiliumNodeResource`: get the node's CiliumNode and update it, or
    create it; owned by the Node, with the Node's labels and addresses. The agent never writes
    `spec.ipam.podCIDRs`: an update keeps what the operator wrote. Sent from the node's lane."""
    path = f"/apis/cilium.io/v2/ciliumnodes/{name}"
    for _ in range(3):  # a conflict means someone wrote in between: read again
        existing = kube.get_or_none(path)
        try:
            if existing is None:
                created = kube.create("/apis/cilium.io/v2/ciliumnodes", {
                    "apiVersion": "cilium.io/v2", "kind": "CiliumNode",
                    "metadata": {"name": name, **meta}, "spec": {"addresses": addresses}})
                if created is not None:
                    return created
                continue  # AlreadyExists: update it instead
            existing["metadata"].update(meta)
            existing.setdefault("spec", {})["addresses"] = addresses
            updated: Obj = kube.request("PUT", path, existing)
            return updated
        except ApiException as error:
            if error.status != 409:
                raise
    return None


def agent_crds(config: dict[str, str]) -> list[str]:
    """The CRDs the agent waits for before it starts its watchers, for its configuration
    (`pkg/k8s/synced/crd.go`, `agentCRDResourceNames`)."""
    def on(key: str, default: bool = False) -> bool:
        return config.get(key, "true" if default else "false").lower() == "true"

    names = ["ciliumnodes", "ciliumidentities", "ciliumpodippools"]
    if not on("disable-endpoint-crd"):
        names.append("ciliumendpoints")
        if on("enable-cilium-endpoint-slice"):
            names.append("ciliumendpointslices")
    policies = on("enable-cilium-network-policy", True)
    clusterwide = on("enable-cilium-clusterwide-network-policy", True)
    if policies:
        names.append("ciliumnetworkpolicies")
    if clusterwide:
        names.append("ciliumclusterwidenetworkpolicies")
    if policies or clusterwide:
        names.append("ciliumcidrgroups")
    if on("enable-egress-gateway") or on("enable-ipv4-egress-gateway"):
        names.append("ciliumegressgatewaypolicies")
    if on("enable-local-redirect-policy"):
        names.append("ciliumlocalredirectpolicies")
    if on("enable-envoy-config"):
        names += ["ciliumclusterwideenvoyconfigs", "ciliumenvoyconfigs"]
    if on("enable-bgp-control-plane"):
        names += ["ciliumbgppeeringpolicies", "ciliumbgpclusterconfigs",
                  "ciliumbgpadvertisements", "ciliumbgppeerconfigs", "ciliumbgpnodeconfigs",
                  "ciliumbgpnodeconfigoverrides"]
    names += ["ciliumloadbalancerippools", "ciliuml2announcementpolicies"]
    return [f"{name}.cilium.io" for name in names]


def go_duration(text: str, default: float) -> float:
    """Seconds in a Go duration (`5m0s`, `90s`, `1h`); ``default`` when it does not parse."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return default
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * unit[u] for n, u in parts)


class OperatorPod(Personality):
    """The chart's `cilium-operator` Deployment pods (container `cilium-operator`, image
    `.../operator-generic:vX` or `.../operator:vX`); see `sandbox.simulator.operator`."""

    name = "cilium-operator"

    def matches(self, pod: PodState) -> bool:
        return operator_container(pod) is not None

    def ready_at_start(self, sim: Simulator, node: NodeState, pod: PodState) -> bool:
        return False  # Ready once it reached the API server

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        sim.later(sim.settings.agent_ready_delay, self._start, sim, pod.uid)

    def _start(self, sim: Simulator, uid: str) -> None:
        pod = sim.pods.get(uid)
        if pod is not None and pod.started and not pod.terminating:
            CILIUM_OPERATOR.start(sim, sim.nodes[pod.node], pod)

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        CILIUM_OPERATOR.stop(sim, pod)


class HostShell(Personality):
    name = "host-shell"

    def matches(self, pod: PodState) -> bool:
        privileged = any((c.get("securityContext") or {}).get("privileged")
                         for c in pod.containers())
        return bool(pod.spec.get("hostPID")) and privileged and self._host_argv(pod) is not None

    @staticmethod
    def _host_argv(pod: PodState) -> list[str] | None:
        container = pod.containers()[0]
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv or argv[0].rsplit("/", 1)[-1] != "nsenter":
            return None
        if "--" in argv:
            return argv[argv.index("--") + 1:]
        rest = [a for a in argv[1:] if not a.startswith("-")]
        return rest or None

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        argv = self._host_argv(pod) or []
        result = run_host_command(node.host, argv)
        sim.complete_pod(pod, result.exit_code, result.output)
        if result.reboot:
            sim.reboot(node)
        else:
            sim.cni_dir_changed(node)  # a file move may have changed the active CNI


class Probe(Personality):
    """The product's verify probe; the datapath runs it (see `sandbox.simulator.datapath`)."""

    name = "probe"

    def matches(self, pod: PodState) -> bool:
        return pod.labels.get(PROBE_LABEL) == "true"

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        sim.datapath.probe(node, pod)


CILIUM_AGENT = CiliumAgent()
OPERATOR_POD = OperatorPod()
# Order matters: the first match wins, the plain workload last.
PERSONALITIES: tuple[Personality, ...] = (
    HostShell(), Probe(), CILIUM_AGENT, OPERATOR_POD, FlannelDaemon(), KubeProxy(),
    Personality(),
)


def personality_of(pod: PodState) -> Personality:
    return next(p for p in PERSONALITIES if p.matches(pod))
