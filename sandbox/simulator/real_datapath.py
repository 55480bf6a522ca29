"""The real-network datapath (``sandbox up --network real``): the simulator acts as each node's
container runtime and kube-proxy over Linux network namespaces, and real programs move packets.

- Each node is a network namespace on the sandbox's underlay bridge (`sandbox.network.underlay`);
  a reboot deletes it and makes a fresh one, as a machine loses its kernel's network state.
- A pod is a network namespace set up by the node's active CNI configuration with the real
  plugins (`sandbox.network.cni`), run inside the node's namespace as containerd runs them.
- flanneld is the real program, one per node, started for the flannel DaemonSet's pod with the
  pod's own arguments; it annotates its Node, programs `flannel.1` and writes the node's
  ``subnet.env``. Until that file exists the flannel CNI plugin fails and pods wait.
- Cilium's datapath is a kernel stand-in (`sandbox.network.cilium_tunnel`), not its eBPF
  programs: a Ready agent sets up `cilium_vxlan` on its tunnel port with routes to the other
  nodes' CiliumNode blocks, and pods on Cilium's CNI config are wired by `ptp` and host-local
  over the node's block.
- kube-proxy programs the Services on its node (`sandbox.network.service_proxy`) from their
  EndpointSlices, again at every EndpointSlice change, so pods and flanneld reach the API
  server at the `kubernetes` ClusterIP and CoreDNS at kube-dns's.
- Containers whose image is agnhost run the real agnhost in the pod's namespace, CoreDNS images
  the real CoreDNS with their ConfigMap's Corefile (`sandbox.network.coredns`); the product's
  probe runs its script with busybox's applets; other containers run no process.
- Pods get the kubelet's resolv.conf (`sandbox.network.pod_dns`) where `ip netns exec` shows it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.images import agnhost_args
from sandbox.nettools import NetworkTools
from sandbox.network import cilium_tunnel, coredns, netns, pod_dns, service_proxy, underlay
from sandbox.network.cni import (
    CniConfig,
    CniError,
    CniRuntime,
    active_config,
    create_pod_netns,
    delete_pod_netns,
)
from sandbox.network.forwarder import ApiForwarder
from sandbox.network.netns import NetworkError
from sandbox.network.node_kubeconfig import write_node_kubeconfig
from sandbox.network.plan import NetworkPlan
from sandbox.simulator.datapath import Datapath
from sandbox.simulator.faults import Fault
from sandbox.simulator.state import NodeState, PodState
from sandbox.topology import API_SERVICE_IP, API_SERVICE_PORT

if TYPE_CHECKING:
    from sandbox.simulator.kubelet import Simulator

log = logging.getLogger("sandbox.simulator")

CILIUM_CNI_TYPE = "cilium-cni"
DEFAULT_TUNNEL_PORT = 8472  # Cilium's default for vxlan (`tunnel-port` unset)
FAULT_CHAIN = "CILIUM-MIGRATE-FAULTS"  # a node's injected firewall rules
SANDBOX_RETRY_SECONDS = 2.0  # the kubelet retries a failed pod sandbox; its back-off is longer
PROBE_TIMEOUT_SECONDS = 60.0
SERVICES_SYNC_SECONDS = 0.2  # kube-proxy's minSyncPeriod is 1 s; changes here are few
SERVICE_ACCOUNT_TOKEN_SECONDS = 3600


@dataclass
class PodRuntime:
    """What the runtime made for one pod: its namespace and its processes."""

    netns: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


class RealDatapath(Datapath):
    name = "real"
    follows_services = True

    def __init__(self, sim: Simulator, plan: NetworkPlan, tools: NetworkTools) -> None:
        self.sim = sim
        self.plan = plan
        self.tools = tools
        self.pods: dict[str, PodRuntime] = {}
        self.flanneld: dict[str, subprocess.Popen[bytes]] = {}
        # Nodes whose agent set up cilium_vxlan since boot, with the peers last programmed
        # there, and the pod blocks routed from the host: CiliumNode events repeat these often.
        self.tunnels: dict[str, list[cilium_tunnel.TunnelPeer] | None] = {}
        self.routed: dict[str, str] = {}  # pod CIDR -> node it is routed through
        self.proxied: set[str] = set()  # nodes whose kube-proxy started since boot
        self._services_sync_pending = False
        api = sim.api_server
        if api is None:
            raise NetworkError("the topology has no API server address for the nodes")
        local_port = int(sim.kube.server.rsplit(":", 1)[1])
        self.forwarder = ApiForwarder(api.host, api.port, "127.0.0.1", local_port)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        underlay.create_underlay(self.plan)
        self.forwarder.start()
        for node in self.sim.nodes.values():
            self._boot(node)

    def close(self) -> None:
        for runtime in self.pods.values():
            _stop_processes(runtime.processes)
        for process in self.flanneld.values():
            _stop_processes([process])
        underlay.tear_down(self.plan)
        self.forwarder.stop()

    def _node_ns(self, node: NodeState) -> str:
        return self.plan.node_netns(node.name)

    def _runtime(self, node: NodeState) -> CniRuntime:
        return CniRuntime(self.tools.cni_bin, node.host.root, self._node_ns(node))

    @staticmethod
    def _subnet_file(node: NodeState) -> Path:
        """flanneld's `--subnet-file` on the node, which its CNI plugin reads."""
        return node.host.root / "run" / "flannel" / "subnet.env"

    @staticmethod
    def _pod_files(node: NodeState, pod: PodState) -> Path:
        """Where the kubelet keeps a pod's own files on the node."""
        return node.host.root / "var" / "lib" / "kubelet" / "pods" / pod.uid

    def _route_pods(self, cidr: str, node: str) -> None:
        if self.routed.get(cidr) != node:
            underlay.route_pods(self.plan, cidr, node)
            self.routed[cidr] = node

    def _boot(self, node: NodeState) -> None:
        # /run is a tmpfs: a boot starts without flannel's subnet.env.
        shutil.rmtree(node.host.root / "run", ignore_errors=True)
        underlay.boot_node(self.plan, node.name)
        # Loose reverse-path filtering, as systemd's defaults leave Debian and Ubuntu nodes:
        # a reply from the other overlay comes back on another device than the request left.
        for scope in ("all", "default"):
            netns.sysctl(self._node_ns(node), f"net.ipv4.conf.{scope}.rp_filter", "2")

    def node_going_down(self, node: NodeState) -> None:
        self.tunnels.pop(node.name, None)
        self.proxied.discard(node.name)
        underlay.shut_down_node(self.plan, node.name)

    def node_booted(self, node: NodeState) -> None:
        self._boot(node)
        self._apply_faults(node)  # a node's firewall comes back with it

    def faults_changed(self) -> None:
        for node in self.sim.nodes.values():
            if node.up:
                self._apply_faults(node)

    def _apply_faults(self, node: NodeState) -> None:
        """`cilium-tunnel-blocked`: the node's filter table drops UDP to and from Cilium's
        tunnel port, in a chain of its own that INPUT and OUTPUT jump to (emptied when the
        fault is cleared)."""
        namespace = self._node_ns(node)
        port = int(node.agent_config.get("tunnel-port") or DEFAULT_TUNNEL_PORT)

        def iptables(*args: str, must: bool = True) -> bool:
            done = netns.run_in(namespace, ["iptables", "-w", *args])
            if must and done.returncode != 0:
                raise NetworkError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
            return done.returncode == 0

        try:
            iptables("-N", FAULT_CHAIN, must=False)  # already there after the first time
            for hook in ("INPUT", "OUTPUT"):
                if not iptables("-C", hook, "-j", FAULT_CHAIN, must=False):
                    iptables("-I", hook, "-j", FAULT_CHAIN)
            iptables("-F", FAULT_CHAIN)
            # Cilium's port is known once its agent has a configuration (until then the
            # default would be flannel's own port).
            if node.agent_config and self.sim.faults.has(node.name, Fault.CILIUM_TUNNEL_BLOCKED):
                for direction in ("--dport", "--sport"):
                    iptables("-A", FAULT_CHAIN, "-p", "udp", direction, str(port), "-j", "DROP")
        except NetworkError as error:
            log.error("node %s: cannot apply its faults: %s", node.name, error)

    def pod_cidr_assigned(self, node: NodeState) -> None:
        assert node.pod_cidr is not None
        self._route_pods(node.pod_cidr, node.name)

    # ---- pods ------------------------------------------------------------------------------

    def pod_address(self, node: NodeState, pod: PodState) -> str | None:
        config = self._pod_network(node)
        if config is None:
            return None
        name = f"{self.plan.prefix}-pod-{pod.uid}"
        runtime = self.pods.get(pod.uid)
        if runtime is None:
            create_pod_netns(name)
            runtime = self.pods[pod.uid] = PodRuntime(netns=name)
            resolv_conf = pod_dns.resolv_conf(pod.spec, pod.namespace)
            if resolv_conf is not None:
                pod_dns.write_resolv_conf(name, resolv_conf)
        try:
            result = self._runtime(node).add(config, pod.uid, netns.path(name), cni_args={
                "K8S_POD_NAMESPACE": pod.namespace, "K8S_POD_NAME": pod.name,
                "K8S_POD_INFRA_CONTAINER_ID": pod.uid, "K8S_POD_UID": pod.uid})
        except CniError as error:
            # The kubelet reports FailedCreatePodSandBox and tries again later.
            log.info("node %s: pod %s/%s: sandbox not created: %s", node.name, pod.namespace,
                     pod.name, error)
            self.sim.later(SANDBOX_RETRY_SECONDS, self.sim.start_if_still_down, pod.uid)
            return None
        self._start_processes(node, pod, runtime, result.ip)
        return result.ip

    def _pod_network(self, node: NodeState) -> CniConfig | None:
        """The node's active CNI configuration; Cilium's own plugin is played by the stand-in
        configuration over the node's block, and only while its agent is Ready (the Cilium
        plugin asks the agent for an address)."""
        config = active_config(node.host.cni_dir)
        if config is None:
            return None
        if any(plugin.get("type") == CILIUM_CNI_TYPE for plugin in config.network["plugins"]):
            block = self.sim.cilium_blocks.get(node.name)
            if not node.agent_ready or block is None:
                return None
            return CniConfig(file=config.file,
                             network=cilium_tunnel.pod_network_config(block, node.host.root))
        return config

    def pod_stopped(self, node: NodeState, pod: PodState) -> None:
        runtime = self.pods.pop(pod.uid, None)
        if runtime is None:
            return
        _stop_processes(runtime.processes)
        try:
            self._runtime(node).delete(pod.uid, netns.path(runtime.netns))
        except CniError as error:
            log.warning("node %s: CNI DEL of %s/%s: %s", node.name, pod.namespace, pod.name,
                        error)
        delete_pod_netns(runtime.netns)
        pod_dns.remove_resolv_conf(runtime.netns)

    def _start_processes(self, node: NodeState, pod: PodState, runtime: PodRuntime,
                         ip: str) -> None:
        for container in pod.containers():
            if coredns.is_coredns(container):
                argv: list[str] | None = self._coredns_argv(node, pod, container)
            else:
                argv = _agnhost_argv(container, self.tools.agnhost)
            if argv is None:
                continue  # no process stands for this image: the namespace is the sandbox
            log_path = self.sim.state_dir / "logs" / "pods" / f"{pod.namespace}_{pod.name}.log"
            runtime.processes.append(netns.spawn_in(
                runtime.netns, self._in_pod_uts(pod, argv), log_path,
                env=self._container_env(node, pod, container, ip)))

    def _coredns_argv(self, node: NodeState, pod: PodState,
                      container: dict[str, Any]) -> list[str]:
        """CoreDNS with the container's arguments; paths inside its ConfigMap volumes name the
        files written for them, and its Corefile gets the service account's kubeconfig."""
        mounts = self._config_map_volumes(node, pod, container)
        kubeconfig = self._service_account_kubeconfig(node, pod)
        for directory in mounts.values():
            corefile = directory / "Corefile"
            if corefile.is_file():
                corefile.write_text(coredns.with_kubeconfig(corefile.read_text(),
                                                            str(kubeconfig)))
        argv = []
        for arg in [*(container.get("command") or [])[1:], *(container.get("args") or [])]:
            inside = next((m for m in mounts if arg.startswith(m.rstrip("/") + "/")), None)
            argv.append(str(mounts[inside]) + arg[len(inside.rstrip("/")):] if inside else arg)
        return [str(self.tools.coredns), *argv]

    def _config_map_volumes(self, node: NodeState, pod: PodState,
                            container: dict[str, Any]) -> dict[str, Path]:
        """The container's ConfigMap volumes written under the pod's directory, as the kubelet
        projects them (every key, or the volume's ``items``): mount path -> directory."""
        volumes = {v["name"]: v["configMap"] for v in pod.spec.get("volumes") or []
                   if "configMap" in v}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            source = volumes.get(mount.get("name", ""))
            if source is None:
                continue
            config_map = self.sim.kube.get_or_none(
                f"/api/v1/namespaces/{pod.namespace}/configmaps/{source['name']}") or {}
            data = config_map.get("data") or {}
            items = source.get("items") or [{"key": key, "path": key} for key in data]
            directory = self._pod_files(node, pod) / "volumes" / mount["name"]
            shutil.rmtree(directory, ignore_errors=True)
            for item in items:
                if item["key"] in data:
                    target = directory / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
            mounts[mount["mountPath"]] = directory
        return mounts

    def _in_pod_uts(self, pod: PodState, argv: list[str]) -> list[str]:
        """The pod's own UTS namespace, named after the pod as the kubelet names its
        sandbox: agnhost's /hostname and /dial answers then say which pod replied."""
        return ["unshare", "--uts", "--", str(self.tools.busybox), "sh", "-c",
                'hostname "$0" && exec "$@"', pod.name, *argv]

    def _container_env(self, node: NodeState, pod: PodState, container: dict[str, Any],
                       ip: str | None) -> dict[str, str]:
        """What the kubelet gives a container: the `kubernetes` Service's variables, then the
        container's own env (values and the downward API's common fields)."""
        env = {"PATH": f"{self.tools.applets}:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": pod.name,
               "KUBERNETES_SERVICE_HOST": API_SERVICE_IP,
               "KUBERNETES_SERVICE_PORT": str(API_SERVICE_PORT)}
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace,
                  "spec.nodeName": node.name, "status.podIP": ip or "",
                  "status.hostIP": node.spec.internal_ip,
                  "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default")}
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = str(variable["value"])
            elif path := ((variable.get("valueFrom") or {}).get("fieldRef") or {}).get(
                    "fieldPath"):
                env[variable["name"]] = fields.get(path, "")
        return env

    # ---- flannel ---------------------------------------------------------------------------

    def flannel_started(self, node: NodeState, pod: PodState) -> None:
        container = next(c for c in pod.containers()
                         if "flanneld" in " ".join(c.get("command") or []))
        net_conf = node.host.root / "etc" / "kube-flannel" / "net-conf.json"
        net_conf.parent.mkdir(parents=True, exist_ok=True)
        net_conf.write_text(json.dumps(self.sim.flannel_net_conf(pod)))
        kubeconfig = self._service_account_kubeconfig(node, pod)
        # The pod's own arguments; the files its volumes would hold are named by flag, since
        # processes here share the machine's filesystem.
        argv = [str(self.tools.flanneld), *(container.get("args") or []),
                f"--net-config-path={net_conf}", f"--subnet-file={self._subnet_file(node)}",
                f"--kubeconfig-file={kubeconfig}"]
        env = self._container_env(node, pod, container, node.spec.internal_ip)
        env.setdefault("NODE_NAME", node.name)
        log_path = self.sim.state_dir / "logs" / "nodes" / f"{node.name}-flanneld.log"
        old = self.flanneld.pop(node.name, None)
        if old is not None:
            _stop_processes([old])
        process = netns.spawn_in(self._node_ns(node), argv, log_path, env=env)
        self.flanneld[node.name] = process
        threading.Thread(target=self._watch_flanneld, args=(node, pod.uid, process),
                         daemon=True, name=f"flanneld-{node.name}").start()
        self._await_subnet_file(node, process)

    def _watch_flanneld(self, node: NodeState, uid: str,
                        process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        self.sim.soon(self._flanneld_exited, node, uid, process, code)

    def _flanneld_exited(self, node: NodeState, uid: str, process: subprocess.Popen[bytes],
                         code: int) -> None:
        if self.flanneld.get(node.name) is not process:
            return  # stopped on purpose
        del self.flanneld[node.name]
        node.flannel_running = False
        pod = self.sim.pods.get(uid)
        if pod is None or not pod.started or pod.terminating:
            return
        log.info("node %s: flanneld exited with %d; see logs/nodes/%s-flanneld.log", node.name,
                 code, node.name)
        back_off = self.sim.crash_containers(pod, f"flanneld exited with code {code}")
        self.sim.later(back_off, self._restart_flanneld, node, uid)

    def _restart_flanneld(self, node: NodeState, uid: str) -> None:
        pod = self.sim.pods.get(uid)
        if pod is None or not pod.started or pod.terminating or not node.up:
            return
        self.sim.restart_containers(pod)
        self.sim.set_pod_ready(pod, True)
        self.flannel_started(node, pod)

    def _await_subnet_file(self, node: NodeState, process: subprocess.Popen[bytes]) -> None:
        """flanneld writes subnet.env once it holds its lease; the CNI plugin needs it."""
        if self.flanneld.get(node.name) is not process:
            return
        if self._subnet_file(node).exists():
            node.flannel_running = True
            self.sim.network_changed(node)
            return
        self.sim.later(0.2, self._await_subnet_file, node, process)

    def flannel_stopped(self, node: NodeState, pod: PodState) -> None:
        node.flannel_running = False
        process = self.flanneld.pop(node.name, None)
        if process is not None:
            _stop_processes([process])

    def _service_account_kubeconfig(self, node: NodeState, pod: PodState) -> Path:
        """The pod's service account token, as the kubelet projects it (TokenRequest bound to
        the pod), in a kubeconfig for the in-cluster address: the `kubernetes` ClusterIP."""
        account = pod.spec.get("serviceAccountName") or "default"
        answer = self.sim.kube.request(
            "POST", f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{account}/token", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                            "name": pod.name, "uid": pod.uid}}})
        token = answer["status"]["token"]
        return write_node_kubeconfig(
            self._pod_files(node, pod) / "kubeconfig",
            f"https://{API_SERVICE_IP}:{API_SERVICE_PORT}", self.sim.state_dir / "pki" / "ca.crt",
            token, user=account)

    # ---- Cilium ----------------------------------------------------------------------------

    def cilium_set_up(self, node: NodeState, block: str | None) -> str | None:
        config = node.agent_config
        if block is None or config.get("routing-mode", "tunnel") != "tunnel":
            return None
        if config.get("tunnel-protocol", "vxlan") != "vxlan":
            return None  # geneve is not played
        port = int(config.get("tunnel-port") or DEFAULT_TUNNEL_PORT)
        try:
            cilium_tunnel.set_up_tunnel(self._node_ns(node), port, node.spec.internal_ip, block)
        except NetworkError as error:
            return f"failed to set up the tunnel device cilium_vxlan on port {port}: {error}"
        self.tunnels[node.name] = None  # a new device: its peers are programmed again
        self._apply_faults(node)
        self._guard_pools(config)
        self._route_pods(block, node.name)
        self.cilium_nodes_changed()
        return None

    def _guard_pools(self, config: dict[str, str]) -> None:
        """The Cilium pool is known once the product installed Cilium: from then on, its
        addresses outside the nodes' blocks are unreachable from the host too."""
        for pool in config.get("cluster-pool-ipv4-cidr", "").split():
            if pool not in self.plan.guarded:
                try:
                    underlay.guard(self.plan, pool)
                except (NetworkError, ValueError) as error:
                    log.error("cannot guard the Cilium pool %s: %s", pool, error)

    def cilium_nodes_changed(self) -> None:
        peers = []
        for name, cilium_node in self.sim.cilium_nodes.items():
            cidrs = ((cilium_node.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []
            address = next((a.get("ip") for a in (cilium_node.get("spec") or {}).get(
                "addresses") or [] if a.get("type") == "InternalIP"), None)
            if cidrs and address:
                peers.append(cilium_tunnel.TunnelPeer(node_ip=address, pod_cidr=cidrs[0]))
                if name in self.sim.nodes:
                    self._route_pods(cidrs[0], name)
        for name, programmed in sorted(self.tunnels.items()):
            node = self.sim.nodes[name]
            if node.up and programmed != peers:
                cilium_tunnel.sync_tunnel_peers(self._node_ns(node), node.spec.internal_ip, peers)
                self.tunnels[name] = peers

    # ---- kube-proxy ------------------------------------------------------------------------

    def service_proxy_started(self, node: NodeState) -> None:
        self.proxied.add(node.name)
        self._program_services([node], self._service_ports())

    def endpoint_slices_changed(self) -> None:
        # kube-proxy's sync runs after a burst of changes, not once per event.
        if not self._services_sync_pending:
            self._services_sync_pending = True
            self.sim.later(SERVICES_SYNC_SECONDS, self._sync_services)

    def _sync_services(self) -> None:
        self._services_sync_pending = False
        nodes = [self.sim.nodes[name] for name in sorted(self.proxied)]
        self._program_services([n for n in nodes if n.up], self._service_ports())

    def _service_ports(self) -> list[service_proxy.ServicePort]:
        services = self.sim.kube.get("/api/v1/services")["items"]
        slices = self.sim.kube.get("/apis/discovery.k8s.io/v1/endpointslices")["items"]
        return service_proxy.service_ports(services, slices)

    def _program_services(self, nodes: list[NodeState],
                          services: list[service_proxy.ServicePort]) -> None:
        for node in nodes:
            try:
                service_proxy.program_services(self._node_ns(node), services)
            except NetworkError as error:
                log.error("node %s: kube-proxy sync failed: %s", node.name, error)

    # ---- the API server's proxies ------------------------------------------------------------

    def egress(self, host: str, port: int) -> str | None:
        """Pods and nodes of this sandbox only: its underlay and its guarded pod ranges."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"{host} is not an address of this sandbox's network"
        if any(address in ipaddress.ip_network(cidr)
               for cidr in (self.plan.underlay, *self.plan.guarded)):
            return None
        return f"{host} is outside this sandbox's networks ({self.plan.underlay}, " \
               f"{', '.join(self.plan.guarded)})"

    # ---- the product's probe ---------------------------------------------------------------

    def probe(self, node: NodeState, pod: PodState) -> None:
        runtime = self.pods.get(pod.uid)
        if runtime is None:
            self.sim.complete_pod(pod, 1, "no pod sandbox")
            return
        container = pod.containers()[0]
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        env = self._container_env(node, pod, container, pod.ip)
        # The kubelet mounts a host file at the termination message path; a variable naming
        # that path is given the host file, which is what the container would write through.
        message_path = container.get("terminationMessagePath", "/dev/termination-log")
        report = self._pod_files(node, pod) / "termination-log"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("")
        env = {key: str(report) if value == message_path else value for key, value in env.items()}
        if argv[:1] == ["sh"]:
            argv = [str(self.tools.busybox), *argv]
        broken = self.sim.faults.has(node.name, Fault.PROBE_FAILS)
        threading.Thread(target=self._run_probe, daemon=True, name=f"probe-{pod.name}",
                         args=(pod, runtime.netns, argv, env, report, broken)).start()

    def _run_probe(self, pod: PodState, namespace: str, argv: list[str], env: dict[str, str],
                   report: Path, broken: bool) -> None:
        if broken:  # the fault is silence: the pod's packets go nowhere, so wget and ping time out
            netns.run_in(namespace, ["iptables", "-w", "-A", "OUTPUT", "-j", "DROP"])
        try:
            result = netns.run_in(namespace, argv, env=env, timeout=PROBE_TIMEOUT_SECONDS)
            code, output = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired:
            code, output = 137, "probe timed out"
        message = report.read_text() if report.exists() else ""
        if code != 0 and not message:
            message = output[-4096:]  # FallbackToLogsOnError
        self.sim.soon(self._probe_ended, pod.uid, code, message)

    def _probe_ended(self, uid: str, code: int, message: str) -> None:
        pod = self.sim.pods.get(uid)
        if pod is not None and pod.started:
            self.sim.complete_pod(pod, code, message)


def _agnhost_argv(container: dict[str, Any], agnhost: Path) -> list[str] | None:
    """agnhost's image runs agnhost: the container's command (if any) and args."""
    args = agnhost_args(container)
    return None if args is None else [str(agnhost), *args]


def _stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
