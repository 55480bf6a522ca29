"""A pod's /etc/resolv.conf, as the kubelet writes it, for processes started in the pod's
network namespace with ``ip netns exec`` (which bind-mounts ``/etc/netns/<name>/resolv.conf``
over ``/etc/resolv.conf``).

After kubelet ``pkg/kubelet/network/dns/dns.go`` (``getPodDNSType``, ``GetPodDNS``,
``generateSearchesForDNSClusterFirst``) and ``pkg/kubelet/kuberuntime`` writing the sandbox's
resolv.conf from it: with ``dnsPolicy`` ClusterFirst (the default) a pod that is not on the
host network gets ``nameserver <clusterDNS>``, the searches ``<ns>.svc.<domain> svc.<domain>
<domain>`` and ``options ndots:5``; ClusterFirstWithHostNet gives the same to any pod. ``Default``
leaves the node's resolv.conf (nothing is written: the process sees the host's), and ``None``
uses ``dnsConfig`` alone. ``dnsConfig`` is merged as upstream's ``appendDNSConfig`` does:
nameservers and searches appended without duplicates, options overriding by name.

Left out: the node's own search domains, which the kubelet appends to ClusterFirst searches
(the sandbox's nodes take theirs from the host, which is not the cluster's), and the limits on
search list length (``validateSearchPaths``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sandbox.topology import CLUSTER_DNS_IP, CLUSTER_DOMAIN

ETC_NETNS = Path("/etc/netns")  # `ip netns exec NAME` mounts /etc/netns/NAME/* over /etc/*
NDOTS = 5  # kubelet's defaultDNSOptions: "ndots:5"


def resolv_conf(spec: dict[str, Any], namespace: str, cluster_dns: str = CLUSTER_DNS_IP,
                domain: str = CLUSTER_DOMAIN) -> str | None:
    """The resolv.conf the kubelet gives a pod with ``spec`` in ``namespace``; None when the
    pod keeps the node's (``dnsPolicy: Default``, or ClusterFirst on the host network)."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network):
        nameservers = [cluster_dns]
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
        options = [f"ndots:{NDOTS}"]
    elif policy != "None":
        return None  # Default, or ClusterFirst on the host network: the node's resolv.conf
    config = spec.get("dnsConfig") or {}
    nameservers += [n for n in config.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in config.get("searches") or [] if s not in searches]
    for option in config.get("options") or []:
        name = option.get("name", "")
        value = option.get("value")
        options = [o for o in options if o.split(":", 1)[0] != name]
        options.append(name if value is None else f"{name}:{value}")
    lines = [f"nameserver {n}" for n in nameservers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_resolv_conf(netns: str, text: str, root: Path = ETC_NETNS) -> Path:
    path = root / netns / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def remove_resolv_conf(netns: str, root: Path = ETC_NETNS) -> None:
    shutil.rmtree(root / netns, ignore_errors=True)


def remove_all(prefix: str, root: Path = ETC_NETNS) -> list[str]:
    """The resolv.conf directories of every namespace named with ``prefix`` (a crashed
    sandbox's leftovers)."""
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"resolv.conf {entry}")
    return removed
