"""What particular pods do on a node, beyond "run and be Ready".

No container runs in the sandbox, so the simulator recognises the few pods whose effects on the
node matter to a migration and plays those effects:

- ``FlannelDaemon``: flanneld, which makes the flannel CNI plugin usable on its node.
- ``CiliumAgent``: the Cilium agent (label ``k8s-app=cilium``). At start it reads cilium-config
  plus the CiliumNodeConfigs selecting its node, and connects to the API server where its env
  says (``sandbox.simulator.apiserver``); when it cannot, it exits and crash-loops, never Ready.
  When ready it takes a per-node block of the cluster pool (recorded in a CiliumNode) and, when
  ``write-cni-conf-when-ready`` names a file, writes its CNI config, parking the others with
  ``cni-exclusive``; while it runs it rewrites them on any change in the CNI directory.
- ``HostShell``: a privileged, host-PID pod running ``nsenter ... -- CMD`` on its node (the
  ``node-shell`` reboot strategy, and the file moves of a rollback); CMD runs on the host.
- ``Probe``: the product's connectivity probe (label ``cilium-migrate.io/probe=true``, env
  ``PROBE_PEERS`` with comma-separated peer IPs). It ends with the report the probe script would
  write as its termination message, in the shape `plan.contract.ProbeReport` documents; exit 0
  only if the API server answered and every peer replied.

Everything else is a plain workload: Running and Ready once it has an IP.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from activities.kubeapi import MERGE
from sandbox.simulator import busybox
from sandbox.simulator.faults import Fault
from sandbox.simulator.hostfs import CILIUM_CONFLIST, CNI_DIR, run_host_command
from sandbox.simulator.ipam import HostLocal, next_free_block
from sandbox.simulator.state import NodeState, PodState

if TYPE_CHECKING:
    from sandbox.simulator.kubelet import Simulator

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
        net_conf = sim.flannel_net_conf(pod)
        backend = net_conf.get("Backend") or {}
        node.flannel_backend = backend
        node.flannel_running = True
        # flanneld publishes its VTEP on the node, as discovery tools (and humans) expect.
        sim.kube.patch(f"/api/v1/nodes/{node.name}", {"metadata": {"annotations": {
            "flannel.alpha.coreos.com/backend-type": str(backend.get("Type", "vxlan")),
            "flannel.alpha.coreos.com/backend-data": json.dumps({"VNI": backend.get("VNI", 1)}),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": node.spec.internal_ip,
        }}})
        sim.network_changed(node)

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        node.flannel_running = False


class CiliumAgent(Personality):
    name = "cilium-agent"

    def matches(self, pod: PodState) -> bool:
        return pod.labels.get("k8s-app") == "cilium"

    def ready_at_start(self, sim: Simulator, node: NodeState, pod: PodState) -> bool:
        return False  # readiness comes after the agent has set up the node, below

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        # Overrides are read once, at agent start: a new CiliumNodeConfig needs a new agent pod.
        node.agent_uid = pod.uid
        node.agent_ready = False
        node.agent_config = sim.cilium_agent_config(pod.namespace, node)
        sim.later(sim.settings.agent_ready_delay, self._become_ready, sim, node, pod.uid)

    def _become_ready(self, sim: Simulator, node: NodeState, uid: str) -> None:
        pod = sim.pods.get(uid)
        if pod is None or not pod.started or pod.terminating or node.agent_uid != uid:
            return
        if sim.faults.has(node.name, Fault.AGENT_NEVER_READY):
            return
        # The agent's first act is to connect to the API server; without it the agent exits,
        # and the kubelet restarts it after a back-off (CrashLoopBackOff).
        problem = sim.api_server_problem(node, pod)
        if problem is not None:
            log.info("node %s: agent %s: %s", node.name, pod.name, problem)
            back_off = sim.crash_containers(pod, problem)
            sim.later(back_off, self._restart, sim, node, uid, (node.boot_id, pod.restarts))
            return
        config = node.agent_config
        if config.get("ipam", "cluster-pool") == "cluster-pool":
            node.cilium_ipam = HostLocal(self._pod_cidr(sim, node, config))
            sim.reserve_existing_ips(node)
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
        pod = sim.pods.get(uid)
        if (pod is None or not pod.started or pod.terminating or node.agent_uid != uid
                or crashed != (node.boot_id, pod.restarts)):
            return  # gone, or started afresh since (a reboot): that start has its own timer
        sim.restart_containers(pod)
        sim.later(sim.settings.agent_ready_delay, self._become_ready, sim, node, uid)

    def _pod_cidr(self, sim: Simulator, node: NodeState, config: dict[str, str]) -> str:
        """The node's block of the cluster pool, kept in its CiliumNode as the operator does."""
        path = f"/apis/cilium.io/v2/ciliumnodes/{node.name}"
        existing = sim.kube.get_or_none(path)
        cidrs = ((existing or {}).get("spec", {}).get("ipam", {}) or {}).get("podCIDRs") or []
        if cidrs:
            sim.cilium_blocks[node.name] = cidrs[0]
            return str(cidrs[0])
        pools = config.get("cluster-pool-ipv4-cidr", "10.0.0.0/8").split()
        mask = int(config.get("cluster-pool-ipv4-mask-size", "24"))
        block = next_free_block(pools, mask, sim.cilium_blocks.values())
        sim.cilium_blocks[node.name] = block
        body: dict[str, Any] = {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode",
            "metadata": {"name": node.name, "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": node.name,
                "uid": sim.node_uids.get(node.name, "")}]},
            "spec": {"ipam": {"podCIDRs": [block]}},
        }
        if existing is None:
            sim.kube.create("/apis/cilium.io/v2/ciliumnodes", body)
        else:
            sim.kube.patch(path, {"spec": body["spec"]}, content_type=MERGE)
        return block

    def on_stopped(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        if node.agent_uid != pod.uid:
            return
        node.agent_uid = None
        node.agent_ready = False
        if node.agent_config.get("cni-uninstall") == "true":
            path = node.agent_config.get("write-cni-conf-when-ready") or DEFAULT_CILIUM_CONF_PATH
            node.host.remove_cni(path.rsplit("/", 1)[-1])
            sim.network_changed(node)


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
    """Plays the probe script. Nothing is dialled: peers are judged by the simulated datapath
    (their pod IPs are data), and the API server's answer is the real server's answer to an
    anonymous GET /healthz, unless the network or the image's wget would not get that far."""

    name = "probe"

    def matches(self, pod: PodState) -> bool:
        return pod.labels.get(PROBE_LABEL) == "true"

    def on_started(self, sim: Simulator, node: NodeState, pod: PodState) -> None:
        peers = [p.strip() for p in (pod.env("PROBE_PEERS") or "").split(",") if p.strip()]
        broken = sim.faults.has(node.name, Fault.PROBE_FAILS)
        reached = {peer: not broken and sim.reachable(node, pod.ip or "", peer) for peer in peers}
        image = pod.containers()[0].get("image", "")
        status: int | None = None
        if broken:
            said: tuple[str, ...] = busybox.NO_REPLY
        elif busybox.tls_handshake_fails(image):
            said = busybox.TLS_FAILURE
        else:
            status, said = sim.healthz_answer()
        report = {"podIP": pod.ip or "", "node": node.name,
                  "apiServer": {"status": status,
                                "error": "" if status is not None else busybox.as_reported(said)},
                  "peers": reached}
        passed = status is not None and all(reached.values())
        sim.complete_pod(pod, 0 if passed else 1, json.dumps(report, separators=(",", ":")))


CILIUM_AGENT = CiliumAgent()
# Order matters: the first match wins, the plain workload last.
PERSONALITIES: tuple[Personality, ...] = (
    HostShell(), Probe(), CILIUM_AGENT, FlannelDaemon(), Personality(),
)


def personality_of(pod: PodState) -> Personality:
    return next(p for p in PERSONALITIES if p.matches(pod))
