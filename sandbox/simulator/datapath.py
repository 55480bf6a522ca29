"""What carries pod traffic on the simulated nodes: the one interface the kubelet and the
personalities call, with two strategies behind it.

- `SimulatedDatapath` (the default, and the only one for large clusters): pod IPs are data.
  Addresses come from in-memory IPAM and a probe's answer is derived from rules about the two
  overlays; nothing is ever sent to a pod IP.
- `sandbox.simulator.real_datapath.RealDatapath` (``sandbox up --network real``): nodes and
  pods are network namespaces, flanneld and the CNI plugins are the real programs, and probes
  send real packets.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any

from sandbox.images import netexec_http_port
from sandbox.network import coredns, pod_dns
from sandbox.simulator import busybox
from sandbox.simulator.faults import Fault
from sandbox.simulator.ipam import ExhaustedError, HostLocal
from sandbox.simulator.state import NodeState, PodState, start_attempt
from sandbox.topology import CLUSTER_CIDR, CLUSTER_DOMAIN

if TYPE_CHECKING:
    from sandbox.simulator.kubelet import Simulator

log = logging.getLogger("sandbox.simulator")

KUBE_DNS = ("kube-system", "kube-dns")  # the Service a ClusterFirst pod's nameserver is
PEER_HTTP_PORT = 8080  # the probe's `wget http://PEER:8080/hostname`


class Datapath:
    """The hooks; each strategy plays them its way. Called on the simulator's dispatcher."""

    name = "none"
    # Whether the simulator feeds `endpoint_slices_changed` (a watch of every EndpointSlice).
    follows_services = False

    def start(self) -> None:
        """Before the first node registers."""

    def close(self) -> None:
        """The simulator stops."""

    def node_booted(self, node: NodeState) -> None:
        """The node's kernel is up (first start or after a reboot), before its pods start."""

    def node_going_down(self, node: NodeState) -> None:
        """The node reboots: its kernel state is about to be lost."""

    def pod_cidr_assigned(self, node: NodeState) -> None:
        """The node's ``spec.podCIDR`` arrived (flannel's subnet for it)."""

    def pod_address(self, node: NodeState, pod: PodState) -> str | None:
        """Sets up the pod's network and returns its IP; None while its CNI cannot serve."""
        raise NotImplementedError

    def pod_stopped(self, node: NodeState, pod: PodState) -> None:
        """The pod's containers stopped for good or until the next boot: free its address."""

    def pod_adopted(self, node: NodeState, pod: PodState) -> None:
        """A restarted simulator found the pod running with ``pod.ip``."""

    def flannel_started(self, node: NodeState, pod: PodState) -> None:
        """flanneld's container started on the node."""

    def flannel_stopped(self, node: NodeState, pod: PodState) -> None:
        node.flannel_running = False

    def cilium_set_up(self, node: NodeState, block: str | None) -> str | None:
        """A starting agent sets up the node's datapath for its block; returns why it cannot
        (the agent then exits with that message), or None."""
        return None

    def cilium_nodes_changed(self) -> None:
        """A CiliumNode appeared, changed or went away."""

    def service_proxy_started(self, node: NodeState) -> None:
        """kube-proxy runs on the node."""

    def faults_changed(self) -> None:
        """The fault file changed: faults the datapath plays itself apply from now on."""

    def endpoint_slices_changed(self) -> None:
        """An EndpointSlice appeared, changed or went away (only when `follows_services`)."""

    def probe(self, node: NodeState, pod: PodState) -> None:
        """Runs the product's probe pod; ends it with `Simulator.complete_pod`."""
        raise NotImplementedError

    def egress(self, host: str, port: int) -> str | None:
        """Why the API server may not connect to ``host:port`` (its pod, service and node
        proxies; `sandbox.egress`), or None when it may."""
        return "this sandbox's network carries no packets"


class SimulatedDatapath(Datapath):
    """Pod IPs are data: host-local IPAM in memory, and reachability derived from rules."""

    name = "simulated"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def egress(self, host: str, port: int) -> str | None:
        return (f"the simulated network carries no packets: {host} is data here, and this "
                "host's default route would take a packet to it off the machine; "
                "`sandbox up --network real` carries real ones")

    def pod_cidr_assigned(self, node: NodeState) -> None:
        assert node.pod_cidr is not None
        node.flannel_ipam = HostLocal(node.pod_cidr)
        self._reserve_existing_ips(node)

    def _reserve_existing_ips(self, node: NodeState) -> None:
        for pod in self.sim.pods_on(node):
            for ipam in (node.flannel_ipam, node.cilium_ipam):
                if pod.ip and ipam is not None and ipam.contains(pod.ip):
                    ipam.reserve(pod.ip)

    def pod_adopted(self, node: NodeState, pod: PodState) -> None:
        self._reserve_existing_ips(node)

    def pod_address(self, node: NodeState, pod: PodState) -> str | None:
        active = node.host.active_cni()
        ipam: HostLocal | None = None
        if active and "cilium" in active and node.agent_ready:
            ipam = node.cilium_ipam
        elif active and "flannel" in active and node.flannel_running:
            ipam = node.flannel_ipam
        if ipam is None:
            return None
        try:
            return ipam.allocate()
        except ExhaustedError as error:
            log.error("node %s: %s", node.name, error)
            return None

    def pod_stopped(self, node: NodeState, pod: PodState) -> None:
        if pod.ip:
            for ipam in (node.flannel_ipam, node.cilium_ipam):
                if ipam is not None and ipam.contains(pod.ip):
                    ipam.release(pod.ip)

    def flannel_started(self, node: NodeState, pod: PodState) -> None:
        # flanneld reads its net-conf as it starts: on the node's lane, beside other nodes'.
        self.sim.read(node.name, functools.partial(self.sim.read_flannel_net_conf,
                                                   pod.namespace, flannel_config_maps(pod)),
                      self._flannel_configured, node, pod.uid, start_attempt(node, pod))

    def _flannel_configured(self, net_conf: dict[str, Any], node: NodeState, uid: str,
                            attempt: tuple[str, int]) -> None:
        pod = self.sim.pods.get(uid)
        if (pod is None or not pod.started or pod.terminating
                or attempt != start_attempt(node, pod)):
            return  # stopped, or started afresh since: that start reads again
        backend = net_conf.get("Backend") or {}
        node.flannel_backend = backend
        node.flannel_running = True
        # flanneld publishes its VTEP on the node, as discovery tools (and humans) expect.
        annotations = {
            "flannel.alpha.coreos.com/backend-type": str(backend.get("Type", "vxlan")),
            "flannel.alpha.coreos.com/backend-data": json.dumps({"VNI": backend.get("VNI", 1)}),
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": node.spec.internal_ip,
        }
        self.sim.write(node.name, self.sim.kube.patch, f"/api/v1/nodes/{node.name}",
                       {"metadata": {"annotations": annotations}})
        self.sim.network_changed(node)

    def cilium_set_up(self, node: NodeState, block: str | None) -> str | None:
        if block is not None:
            if node.cilium_ipam is None or str(node.cilium_ipam.network) != block:
                node.cilium_ipam = HostLocal(block)
            self._reserve_existing_ips(node)
        return None

    def probe(self, node: NodeState, pod: PodState) -> None:
        """Nothing is dialled: peers are judged by `reachable` (their pod IPs are data), and
        the API server's answer is the real server's answer to an anonymous GET /healthz,
        unless the network or the image's wget would not get that far."""
        sim = self.sim
        peers = [p.strip() for p in (pod.env("PROBE_PEERS") or "").split(",") if p.strip()]
        broken = sim.faults.has(node.name, Fault.PROBE_FAILS)
        reached = {peer: not broken and self.reachable(node, pod.ip or "", peer)
                   and self._serves_echo(peer) for peer in peers}
        # The script looks a name up only when PROBE_DNS_NAME names one.
        asked = pod.env("PROBE_DNS_NAME") or ""
        dns = self._dns_answer(node, pod, broken, asked) if asked else None
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
                  **({"dns": dns} if dns is not None else {}), "peers": reached}
        passed = (status is not None and (dns is None or bool(dns["addresses"]))
                  and all(reached.values()))
        sim.complete_pod(pod, 0 if passed else 1, json.dumps(report, separators=(",", ":")))

    def _serves_echo(self, ip: str) -> bool:
        """Whether the pod at ``ip`` answers the probe's ``GET /hostname`` on the echo port:
        it runs agnhost netexec serving HTTP there."""
        target = next((p for p in self.sim.pods.values() if p.ip == ip and p.started), None)
        return target is not None and any(netexec_http_port(c) == PEER_HTTP_PORT
                                          for c in target.containers())

    def _dns_answer(self, node: NodeState, pod: PodState, broken: bool,
                    asked: str) -> dict[str, Any]:
        """What the script's lookups of ``asked`` find: the name as given, then
        with each search domain of the pod's resolv.conf in order (busybox's nslookup applies
        none itself). Only the `kubernetes` Service's cluster name resolves, and only while
        kube-dns exists and a Ready CoreDNS pod is reachable from the probe."""
        resolv = pod_dns.resolv_conf(pod.spec, pod.namespace) or ""
        searches = next((line.split()[1:] for line in resolv.splitlines()
                         if line.startswith("search ")), [])
        names = [asked, *(f"{asked}.{domain}" for domain in searches)]
        servers = [] if broken or self.sim.service_cluster_ip(*KUBE_DNS) is None else [
            p for p in self.sim.pods.values() if p.started and not p.terminating and p.ip
            and p.container_statuses and all(c.get("ready") for c in p.container_statuses)
            and any(coredns.is_coredns(c) for c in p.containers())
            and self.reachable(node, pod.ip or "", p.ip)]
        if not servers:
            said: tuple[str, ...] = busybox.NSLOOKUP_NO_SERVER
            return {"name": asked, "addresses": [], "error": busybox.nslookup_error(said)}
        cluster_name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        if cluster_name in names:
            address = self.sim.service_cluster_ip("default", "kubernetes")
            return {"name": cluster_name, "addresses": [address] if address else [],
                    "error": ""}
        # Outside CoreDNS's zones (no `forward` in the sandbox) the name given is SERVFAIL.
        rcode = "SERVFAIL" if names[-1] == asked else "NXDOMAIN"
        return {"name": asked, "addresses": [],
                "error": busybox.nslookup_error(busybox.nslookup_not_found(names[-1], rcode))}

    def reachable(self, source: NodeState, source_ip: str, target_ip: str) -> bool:
        """Whether the simulated datapath carries traffic from a pod to ``target_ip``.

        Both ends must be up. Whenever Cilium carries one end, its VXLAN device must not share
        flannel's UDP port (the two devices cannot bind together), and traffic between the two
        overlays needs Cilium's host legacy routing, which hands packets to the Linux stack.
        """
        sim = self.sim
        target_pod = next((p for p in sim.pods.values() if p.ip == target_ip and p.started), None)
        if target_pod is None:
            return False
        target = sim.nodes[target_pod.node]
        if not (source.up and target.up):
            return False
        overlays = {self._overlay(source, source_ip), self._overlay(target, target_ip)}
        if "cilium" not in overlays:
            return True
        # Packets to a Cilium pod on another node cross Cilium's tunnel (the reply too, when
        # the other end is the Cilium one); a node dropping that port cuts the exchange.
        if source is not target and any(sim.faults.has(n.name, Fault.CILIUM_TUNNEL_BLOCKED)
                                        for n in (source, target)):
            return False
        cilium_node = source if self._overlay(source, source_ip) == "cilium" else target
        config = cilium_node.agent_config
        flannel_backend = next((n.flannel_backend for n in sim.nodes.values()
                                if n.flannel_backend), {})
        flannel_port = str(flannel_backend.get("Port", 8472))
        if (config.get("tunnel-protocol", "vxlan") == "vxlan"
                and config.get("routing-mode", "tunnel") == "tunnel"
                and config.get("tunnel-port", "8472") == flannel_port
                and any(n.flannel_running for n in sim.nodes.values())):
            return False
        if "flannel" in overlays:
            return config.get("enable-host-legacy-routing") == "true"
        return True

    def _overlay(self, node: NodeState, ip: str) -> str:
        if ip == node.spec.internal_ip:
            return "host"
        block = self.sim.cilium_blocks.get(node.name)
        if block and ipaddress.ip_address(ip) in ipaddress.ip_network(block):
            return "cilium"
        if ipaddress.ip_address(ip) in ipaddress.ip_network(CLUSTER_CIDR):
            return "flannel"
        return "unknown"


def flannel_config_maps(pod: PodState) -> list[str]:
    """The ConfigMaps mounted into a flannel pod, where its net-conf.json may be."""
    return [volume["configMap"]["name"] for volume in pod.spec.get("volumes") or []
            if "configMap" in volume]
