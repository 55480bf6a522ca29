"""A stand-in for kube-proxy in iptables mode on one node: enough for pods and host processes to
reach the API server at the ``kubernetes`` Service's ClusterIP and CoreDNS at ``kube-dns``'s.

Chain layout and names after kube-proxy's ``pkg/proxy/iptables/proxier.go``: in the ``nat``
table, ``KUBE-SERVICES`` jumped to from ``PREROUTING`` and ``OUTPUT`` ("kubernetes service
portals"); one rule there per ClusterIP, port and protocol into ``KUBE-SVC-<hash>``; that chain
picks an endpoint with ``-m statistic --mode random`` (probability 1/n, 1/(n-1), ..., the last
one unconditional) and jumps to its ``KUBE-SEP-<hash>``, which DNATs. The hashes are upstream's
(``portProtoHash``, ``servicePortEndpointChainName``), so ``default/kubernetes:https`` gets the
familiar ``KUBE-SVC-NPX46M4PTMTKRN6Y`` and ``kube-system/kube-dns:dns`` (UDP)
``KUBE-SVC-TCOU7JCQXEZGVUNU``. As upstream, the jump rules are ensured with ``iptables -w`` and
the chains are written in one ``iptables-restore -w --noflush``, which flushes and refills each
declared chain at once, so a rebuild never shows a half-written table. Each call states every
Service of the node, as a kube-proxy sync does: a Service left out loses its rules.

Left out: NodePorts (``KUBE-NODEPORTS``), the masquerade marks and ``KUBE-POSTROUTING``
(``KUBE-MARK-MASQ`` for hairpin and off-cluster sources), the ``filter`` table (REJECT for
Services without endpoints, ``KUBE-FORWARD``, the firewall chains), session affinity, traffic
policies, SCTP, IPv6, and conntrack clean-up of UDP flows to removed endpoints (kube-proxy
deletes them; here a client that keeps its source port keeps its old endpoint).

What the node must bring, as a real one does: a route covering the ClusterIP (a host process's
connect looks up a route before OUTPUT's DNAT, and fails with "Network is unreachable" without
one), and a way back from the endpoint to pod addresses, since nothing here masquerades.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from sandbox.network.netns import NetworkError, run_in

SERVICES_CHAIN = "KUBE-SERVICES"
KUBERNETES_PORT_NAME = "default/kubernetes:https"  # ServicePortName.String(): ns/name:port
_JUMP_COMMENT = "kubernetes service portals"
_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-")
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service as kube-proxy programs it: ``name`` is upstream's
    ServicePortName (``namespace/service:port``, or ``namespace/service`` for an unnamed
    port), ``endpoints`` the ready ``(ip, port)`` pairs of its EndpointSlices."""

    name: str
    cluster_ip: str
    port: int
    protocol: str = "tcp"  # lower case, as in the rules
    endpoints: list[tuple[str, int]] = field(default_factory=list)


def service_chain(port_name: str, protocol: str = "tcp") -> str:
    """``KUBE-SVC-`` and 16 characters of base32(sha256(port name + protocol)), as upstream."""
    return "KUBE-SVC-" + _hash(port_name + protocol)


def endpoint_chain(port_name: str, endpoint: str, protocol: str = "tcp") -> str:
    """``KUBE-SEP-`` and the hash of port name, protocol and ``ip:port``, as upstream."""
    return "KUBE-SEP-" + _hash(port_name + protocol + endpoint)


def program_services(netns: str, services: list[ServicePort]) -> None:
    """Makes ``netns``'s nat table send each Service port's traffic (from pods, PREROUTING, and
    host processes, OUTPUT) to one of its endpoints, at random when several. Idempotent: the
    chains are rebuilt each time and chains no longer needed removed. A port without endpoints
    is left unprogrammed (upstream REJECTs it in ``filter``)."""
    chains = [SERVICES_CHAIN]
    rules: list[str] = []
    # Sorted, so the same Services always give the same rules.
    for service in sorted(services, key=lambda s: (s.name, s.protocol)):
        service_chains, service_rules = _service_rules(service)
        chains += service_chains
        rules += service_rules
    _ensure_jumps(netns)
    stale = [chain for chain in _nat_chains(netns)
             if chain.startswith(_CHAIN_PREFIXES) and chain not in chains]
    _restore(netns, chains + stale, rules + [f"-X {chain}" for chain in stale])


def _service_rules(service: ServicePort) -> tuple[list[str], list[str]]:
    ipaddress.IPv4Address(service.cluster_ip)
    protocol, name = service.protocol, service.name
    if protocol not in PROTOCOLS:
        raise ValueError(f"{name}: protocol {protocol} is not played (only {PROTOCOLS})")
    unique = sorted({(ipaddress.IPv4Address(ip), p) for ip, p in service.endpoints})
    targets = [f"{ip}:{p}" for ip, p in unique]
    if not targets:
        return [], []
    svc = service_chain(name, protocol)
    seps = [endpoint_chain(name, target, protocol) for target in targets]
    match = f"-m {protocol} -p {protocol}"
    rules = [f'-A {SERVICES_CHAIN} -m comment --comment "{name} cluster IP" '
             f"{match} -d {service.cluster_ip}/32 --dport {service.port} -j {svc}"]
    for index, (target, sep) in enumerate(zip(targets, seps, strict=True)):
        left = len(targets) - index
        odds = f"-m statistic --mode random --probability {1 / left:0.10f} " if left > 1 else ""
        rules.append(f'-A {svc} -m comment --comment "{name} -> {target}" {odds}-j {sep}')
    for target, sep in zip(targets, seps, strict=True):
        rules.append(f'-A {sep} -m comment --comment "{name}" {match} '
                     f"-j DNAT --to-destination {target}")
    return [svc, *seps], rules


def clear_services(netns: str) -> None:
    """Removes what ``program_services`` wrote: the jumps, KUBE-SERVICES and every KUBE-SVC-/
    KUBE-SEP- chain (upstream's ``CleanupLeftovers`` for the nat table). Nothing happens when
    there is nothing to remove."""
    for hook in ("PREROUTING", "OUTPUT"):
        while _iptables(netns, "-D", hook, *_jump_rule(), check=False) == 0:
            pass
    ours = [chain for chain in _nat_chains(netns)
            if chain == SERVICES_CHAIN or chain.startswith(_CHAIN_PREFIXES)]
    if ours:
        _restore(netns, ours, [f"-X {chain}" for chain in ours])


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _jump_rule() -> list[str]:
    return ["-m", "comment", "--comment", _JUMP_COMMENT, "-j", SERVICES_CHAIN]


def _ensure_jumps(netns: str) -> None:
    # The chain must exist before a rule can jump to it; "already exists" is fine.
    _iptables(netns, "-N", SERVICES_CHAIN, check=False)
    for hook in ("PREROUTING", "OUTPUT"):
        if _iptables(netns, "-C", hook, *_jump_rule(), check=False) != 0:
            _iptables(netns, "-I", hook, *_jump_rule())  # first, as upstream prepends it


def _nat_chains(netns: str) -> list[str]:
    result = run_in(netns, ["iptables-save", "-t", "nat"])
    if result.returncode != 0:
        raise NetworkError(f"iptables-save -t nat in {netns} failed: {result.stderr.strip()}")
    return [line[1:].split()[0] for line in result.stdout.splitlines() if line.startswith(":")]


def _restore(netns: str, chains: list[str], rules: list[str]) -> None:
    # A declared chain is created or flushed; --noflush keeps everything else in the table.
    text = "\n".join(["*nat", *(f":{chain} - [0:0]" for chain in chains), *rules, "COMMIT", ""])
    result = run_in(netns, ["iptables-restore", "-w", "--noflush"], stdin=text)
    if result.returncode != 0:
        raise NetworkError(f"iptables-restore in {netns} failed: {result.stderr.strip()}\n{text}")


def _iptables(netns: str, *args: str, check: bool = True) -> int:
    result = run_in(netns, ["iptables", "-w", "-t", "nat", *args])
    if check and result.returncode != 0:
        raise NetworkError(f"iptables -t nat {' '.join(args)} in {netns} failed: "
                           f"{result.stderr.strip()}")
    return result.returncode


def service_ports(services: list[dict[str, Any]], slices: list[dict[str, Any]]
                  ) -> list[ServicePort]:
    """What kube-proxy's change trackers make of the Services and EndpointSlices it watches:
    one ServicePort per port of each Service with a ClusterIP (headless and ExternalName
    Services have none), with the ready endpoints of its slices (those labelled
    ``kubernetes.io/service-name`` with it) whose port has the same name and protocol. An
    endpoint whose ``ready`` condition is unset counts as ready, as upstream reads it."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in slices:
        meta = item.get("metadata") or {}
        owner = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if owner and item.get("addressType", "IPv4") == "IPv4":
            by_service.setdefault((meta.get("namespace", ""), owner), []).append(item)
    found = []
    for service in services:
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None" or spec.get("type") == "ExternalName":
            continue
        key = (meta.get("namespace", ""), meta.get("name", ""))
        for port in spec.get("ports") or []:
            name, protocol = port.get("name") or "", port.get("protocol", "TCP")
            if protocol.lower() not in PROTOCOLS:
                continue  # SCTP is not played
            endpoints = [
                (address, slice_port["port"])
                for item in by_service.get(key, [])
                for slice_port in item.get("ports") or []
                if (slice_port.get("name") or "") == name and slice_port.get("port")
                and slice_port.get("protocol", "TCP") == protocol
                for endpoint in item.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready") is not False
                for address in endpoint.get("addresses") or []]
            found.append(ServicePort(
                name=f"{key[0]}/{key[1]}" + (f":{name}" if name else ""), cluster_ip=cluster_ip,
                port=int(port["port"]), protocol=protocol.lower(), endpoints=endpoints))
    return found
