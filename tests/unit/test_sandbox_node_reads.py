"""What a node's own processes ask the API server as they start (a Cilium agent's
configuration and CiliumNode, flannel's install-cni copy and net-conf) goes out on the node's
lane: like a thousand independent nodes, one node's slow answer holds up that node only, never
the simulator's dispatcher and with it every other node's kubelet."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.simulator.kubelet import Simulator
from sandbox.simulator.personalities import CILIUM_AGENT
from sandbox.simulator.state import NodeState, PodState
from sandbox.topology import NodeSpec, Topology

HANG_GUARD_SECONDS = 30  # only against a test that would otherwise hang forever
FLANNEL_CONFLIST = '{"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{"type": "flannel"}]}'
NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}}'


class ConfigServer:
    """Answers the agent's `build-config` reads; the first cilium-config read can be held."""

    def __init__(self, hold_first: bool) -> None:
        self.released = threading.Event()
        self.holding = threading.Event()
        self.reads = 0
        self.flannel_reads = 0
        if not hold_first:
            self.released.set()

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        if path.endswith("/configmaps/kube-flannel-cfg"):
            self.flannel_reads += 1
            if self.flannel_reads == 1:
                self.holding.set()
                assert self.released.wait(HANG_GUARD_SECONDS)
            return {"data": {"cni-conf.json": FLANNEL_CONFLIST, "net-conf.json": NET_CONF}}
        if path.endswith("/configmaps/cilium-config"):
            self.reads += 1
            this_read = self.reads
            if this_read == 1:
                self.holding.set()
                assert self.released.wait(HANG_GUARD_SECONDS)
            return {"data": {"tunnel-port": str(8470 + this_read)}}
        return {"items": []}

    def patch(self, path: str, body: dict[str, Any], *args: Any) -> None:
        """The kubelet's status patches: nothing here reads them back."""


def simulator(tmp_path: Path, kube: ConfigServer) -> Simulator:
    nodes = [NodeSpec(name=f"worker-{index}", internal_ip=f"127.0.10.{index}", zone=None)
             for index in (1, 2)]
    return Simulator(kube, Topology(nodes=nodes), tmp_path)  # type: ignore[arg-type]


def agent(sim: Simulator, node: NodeState) -> PodState:
    pod = PodState(uid=f"agent-{node.name}", namespace="kube-system",
                   name=f"cilium-{node.name}", node=node.name,
                   obj={"spec": {"containers": [{"name": "cilium-agent"}]}}, started=True)
    sim.pods[pod.uid] = pod
    return pod


def dispatch_until(sim: Simulator, done: Callable[[], bool]) -> bool:
    for _ in range(HANG_GUARD_SECONDS):  # each round waits at most a second for an event
        if done():
            return True
        sim._dispatch_once()
    return done()


def test_an_agent_waiting_for_its_configuration_holds_up_no_other_node(tmp_path: Path) -> None:
    kube = ConfigServer(hold_first=True)
    sim = simulator(tmp_path, kube)
    slow, fast = sim.nodes["worker-1"], sim.nodes["worker-2"]
    starting = threading.Thread(target=CILIUM_AGENT.resume, args=(sim, slow, agent(sim, slow)))
    starting.start()
    starting.join(HANG_GUARD_SECONDS)
    assert not starting.is_alive(), "the dispatcher waited for the API server's answer"
    assert kube.holding.wait(HANG_GUARD_SECONDS)

    CILIUM_AGENT.resume(sim, fast, agent(sim, fast))
    assert dispatch_until(sim, lambda: fast.agent_stage is None)
    assert fast.agent_config == {"tunnel-port": "8472"}
    assert slow.agent_stage == "config" and slow.agent_config == {}

    kube.released.set()
    assert dispatch_until(sim, lambda: slow.agent_stage is None)
    assert slow.agent_config == {"tunnel-port": "8471"}


def test_an_answer_for_an_agent_start_that_a_reboot_replaced_is_dropped(tmp_path: Path) -> None:
    kube = ConfigServer(hold_first=True)
    sim = simulator(tmp_path, kube)
    node = sim.nodes["worker-1"]
    pod = agent(sim, node)
    CILIUM_AGENT.resume(sim, node, pod)
    assert kube.holding.wait(HANG_GUARD_SECONDS)
    node.boot_id = "after-the-reboot"  # the node rebooted; the kubelet starts the agent again
    pod.restarts += 1
    CILIUM_AGENT.resume(sim, node, pod)
    kube.released.set()
    assert dispatch_until(sim, lambda: node.agent_stage is None)
    assert node.agent_config == {"tunnel-port": "8472"}, "the first start's answer was applied"
    connects = [timer for timer in sim._timers if timer[2] == CILIUM_AGENT._connect]
    assert len(connects) == 1  # one agent container starts, not two


def flannel(sim: Simulator, node: NodeState) -> PodState:
    """kube-flannel.yml's pod: install-cni copies the ConfigMap's conflist to the host."""
    pod = PodState(uid=f"flannel-{node.name}", namespace="kube-flannel",
                   name=f"kube-flannel-ds-{node.name}", node=node.name, obj={"spec": {
                       "hostNetwork": True,
                       "initContainers": [{
                           "name": "install-cni", "command": ["cp"],
                           "args": ["-f", "/etc/kube-flannel/cni-conf.json",
                                    "/etc/cni/net.d/10-flannel.conflist"],
                           "volumeMounts": [{"name": "cni", "mountPath": "/etc/cni/net.d"},
                                            {"name": "flannel-cfg",
                                             "mountPath": "/etc/kube-flannel/"}]}],
                       "containers": [{"name": "kube-flannel", "command": ["/opt/bin/flanneld"],
                                       "args": ["--ip-masq", "--kube-subnet-mgr"]}],
                       "volumes": [{"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                                   {"name": "flannel-cfg",
                                    "configMap": {"name": "kube-flannel-cfg"}}]}})
    sim.pods[pod.uid] = pod
    return pod


def test_flannel_starting_on_one_node_holds_up_no_other_node(tmp_path: Path) -> None:
    kube = ConfigServer(hold_first=True)
    sim = simulator(tmp_path, kube)
    slow, fast = sim.nodes["worker-1"], sim.nodes["worker-2"]
    slow_pod = flannel(sim, slow)
    starting = threading.Thread(target=sim._start_pod, args=(slow_pod,))
    starting.start()
    starting.join(HANG_GUARD_SECONDS)
    assert not starting.is_alive(), "the dispatcher waited for install-cni's ConfigMap"
    assert kube.holding.wait(HANG_GUARD_SECONDS)
    sim._start_pod(slow_pod)  # what the pod's next watch event does: no second copy

    fast_pod = flannel(sim, fast)
    sim._start_pod(fast_pod)
    assert dispatch_until(sim, lambda: fast.flannel_running)
    assert fast_pod.started and fast.flannel_backend == {"Type": "vxlan", "VNI": 1}
    assert (fast.host.cni_dir / "10-flannel.conflist").read_text() == FLANNEL_CONFLIST
    assert not slow_pod.started and not (slow.host.cni_dir / "10-flannel.conflist").exists()

    kube.released.set()
    assert dispatch_until(sim, lambda: slow.flannel_running)
    assert (slow.host.cni_dir / "10-flannel.conflist").read_text() == FLANNEL_CONFLIST
    # install-cni and flanneld each read the ConfigMap once per node.
    assert kube.flannel_reads == 4
