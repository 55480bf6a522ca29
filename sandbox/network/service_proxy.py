"""A stand-in for kube-proxy in iptables mode on one node, for one Service: enough for pods and
host processes to reach the API server at the ``kubernetes`` Service's ClusterIP.

Chain layout and names after kube-proxy's ``pkg/proxy/iptables/proxier.go``: in the ``nat``
table, ``KUBE-SERVICES`` jumped to from ``PREROUTING`` and ``OUTPUT`` ("kubernetes service
portals"); one rule there per ClusterIP and port into ``KUBE-SVC-<hash>``; that chain picks an
endpoint with ``-m statistic --mode random`` (probability 1/n, 1/(n-1), ..., the last one
unconditional) and jumps to its ``KUBE-SEP-<hash>``, which DNATs. The hashes are upstream's
(``portProtoHash``, ``servicePortEndpointChainName``), so ``default/kubernetes:https`` gets the
familiar ``KUBE-SVC-NPX46M4PTMTKRN6Y``. As upstream, the jump rules are ensured with
``iptables -w`` and the chains are written in one ``iptables-restore -w --noflush``, which
flushes and refills each declared chain at once, so a rebuild never shows a half-written table.

Left out: every other Service (the node's KUBE-SERVICES holds this one only), NodePorts
(``KUBE-NODEPORTS``), the masquerade marks and ``KUBE-POSTROUTING`` (``KUBE-MARK-MASQ`` for
hairpin and off-cluster sources), the ``filter`` table (REJECT for Services without endpoints,
``KUBE-FORWARD``, the firewall chains), session affinity, traffic policies, UDP/SCTP, IPv6, and
conntrack clean-up of connections to removed endpoints.

What the node must bring, as a real one does: a route covering the ClusterIP (a host process's
connect looks up a route before OUTPUT's DNAT, and fails with "Network is unreachable" without
one), and a way back from the endpoint to pod addresses, since nothing here masquerades.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress

from sandbox.network.netns import NetworkError, run_in

SERVICES_CHAIN = "KUBE-SERVICES"
KUBERNETES_PORT_NAME = "default/kubernetes:https"  # ServicePortName.String(): ns/name:port
_JUMP_COMMENT = "kubernetes service portals"
_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-")


def service_chain(port_name: str, protocol: str = "tcp") -> str:
    """``KUBE-SVC-`` and 16 characters of base32(sha256(port name + protocol)), as upstream."""
    return "KUBE-SVC-" + _hash(port_name + protocol)


def endpoint_chain(port_name: str, endpoint: str, protocol: str = "tcp") -> str:
    """``KUBE-SEP-`` and the hash of port name, protocol and ``ip:port``, as upstream."""
    return "KUBE-SEP-" + _hash(port_name + protocol + endpoint)


def program_service(netns: str, cluster_ip: str, port: int, endpoints: list[tuple[str, int]],
                    port_name: str = KUBERNETES_PORT_NAME) -> None:
    """Makes ``netns``'s nat table send TCP to ``cluster_ip``:``port`` to one of ``endpoints``
    (random balance when several), from pods (PREROUTING) and host processes (OUTPUT).
    Idempotent: the chains are rebuilt each time and chains of earlier endpoints removed. With
    no endpoints the ClusterIP is left unprogrammed (upstream REJECTs it in ``filter``)."""
    ipaddress.IPv4Address(cluster_ip)
    # Sorted, so the same endpoints always give the same rules.
    unique = sorted({(ipaddress.IPv4Address(ip), p) for ip, p in endpoints})
    targets = [f"{ip}:{p}" for ip, p in unique]
    svc = service_chain(port_name)
    seps = [endpoint_chain(port_name, target) for target in targets]

    _ensure_jumps(netns)
    chains = [SERVICES_CHAIN]
    rules: list[str] = []
    if targets:
        chains += [svc, *seps]
        rules.append(f'-A {SERVICES_CHAIN} -m comment --comment "{port_name} cluster IP" '
                     f"-m tcp -p tcp -d {cluster_ip}/32 --dport {port} -j {svc}")
        for index, (target, sep) in enumerate(zip(targets, seps, strict=True)):
            left = len(targets) - index
            odds = f"-m statistic --mode random --probability {1 / left:0.10f} " if left > 1 else ""
            rules.append(f'-A {svc} -m comment --comment "{port_name} -> {target}" {odds}-j {sep}')
        for target, sep in zip(targets, seps, strict=True):
            rules.append(f'-A {sep} -m comment --comment "{port_name}" -m tcp -p tcp '
                         f"-j DNAT --to-destination {target}")
    stale = [chain for chain in _nat_chains(netns)
             if chain.startswith(_CHAIN_PREFIXES) and chain not in chains]
    _restore(netns, chains + stale, rules + [f"-X {chain}" for chain in stale])


def clear_services(netns: str) -> None:
    """Removes what ``program_service`` wrote: the jumps, KUBE-SERVICES and every KUBE-SVC-/
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
