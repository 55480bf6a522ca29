"""The underlay: one bridge in the root namespace standing for the nodes' L2 network, and each
node a namespace plugged into it by a veth pair, its end named ``eth0`` like a real NIC.

The root namespace plays two parts: the switch (the bridge, which only bridges) and the control
plane host (the gateway address, where the API server forwarder listens). It never routes for
the nodes: a rule refuses every packet that arrives from the bridge for somewhere else, so a node
or pod can't reach past this machine whatever the host's ``ip_forward`` says, and every guarded
range has an ``unreachable`` route, so a pod address the root namespace has no route for is
refused here instead of going out by the default route.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path

from sandbox.network import netns, pod_dns
from sandbox.network.netns import NetworkError, ip
from sandbox.network.plan import (
    ROUTE_PROTO,
    NetworkPlan,
    host_entries,
    refuse_guard_conflicts,
    route_metric,
)

# Right after the `local` table's rule (0), ahead of any rule that could route a packet away.
RULE_PRIORITY = 213


def create_underlay(plan: NetworkPlan) -> None:
    """The bridge, up with the gateway address; the forwarding refusal; the guard routes.
    Safe to call again on an existing underlay."""
    bridge = plan.bridge
    if not _link_exists(bridge):
        # A fixed MAC: a bridge otherwise takes its lowest port's, changing under the nodes'
        # ARP caches as nodes come and go.
        ip("link", "add", "name", bridge, "address", plan.bridge_mac(), "type", "bridge")
    ip("addr", "replace", f"{plan.gateway}/{ipaddress.IPv4Network(plan.underlay).prefixlen}",
       "dev", bridge)
    _write_sysctl(Path("/proc/sys/net/ipv6/conf") / bridge / "disable_ipv6", "1")
    ip("link", "set", bridge, "up")
    if not any(rule.get("iif") == bridge for rule in _rules()):
        ip("rule", "add", "priority", str(RULE_PRIORITY), "iif", bridge, "unreachable")
    for cidr in plan.guarded:
        _guard_route(plan, cidr)


def boot_node(plan: NetworkPlan, node: str) -> None:
    """(Re)creates the node's namespace as a machine boots: nothing of its last life remains
    (processes, links, routes, sysctls), its eth0 has the same MAC and address as before."""
    namespace, veth = plan.node_netns(node), plan.node_veth(node)
    if not _link_exists(plan.bridge):
        raise NetworkError(f"bridge {plan.bridge} missing: create_underlay() comes first")
    _remove_node(namespace, veth)
    netns.create(namespace)
    node_mac, root_mac = plan.node_macs(node)
    ip("link", "add", veth, "address", root_mac, "type", "veth",
       "peer", "name", "eth0", "address", node_mac, "netns", namespace)
    ip("link", "set", veth, "master", plan.bridge, "up")
    prefixlen = ipaddress.IPv4Network(plan.underlay).prefixlen
    ip("addr", "add", f"{plan.node_ip(node)}/{prefixlen}", "dev", "eth0", netns=namespace)
    ip("link", "set", "eth0", "up", netns=namespace)
    # kubelet and flanneld pick the node address from the interface of the default route.
    ip("route", "add", "default", "via", plan.gateway, "dev", "eth0", netns=namespace)
    netns.sysctl(namespace, "net.ipv4.ip_forward", "1")


def shut_down_node(plan: NetworkPlan, node: str) -> None:
    """The node's processes end and its namespace, links and routes go."""
    _remove_node(plan.node_netns(node), plan.node_veth(node))


def route_pods(plan: NetworkPlan, cidr: str, node: str) -> None:
    """The root namespace (the API server's) reaches ``cidr`` through the node, replacing any
    earlier route of the sandbox for it."""
    network = str(ipaddress.IPv4Network(cidr))
    ip("route", "replace", network, "via", plan.node_ip(node), "dev", plan.bridge,
       "proto", str(ROUTE_PROTO), "metric", str(plan.metric))


def unroute_pods(plan: NetworkPlan, cidr: str) -> None:
    """Removes the sandbox's route for ``cidr``, if any; the guard route shows through again."""
    network = str(ipaddress.IPv4Network(cidr))
    for route in _our_routes(plan.prefix):
        if route.get("dst") == network and route.get("dev") == plan.bridge:
            _delete_route(route)


def guard(plan: NetworkPlan, cidr: str) -> None:
    """Adds a guarded range once it is known (the Cilium pool), refusing one the host uses;
    the caller saves the plan, which now lists it."""
    network = str(ipaddress.IPv4Network(cidr))
    refuse_guard_conflicts(network, host_entries(plan.prefix))
    _guard_route(plan, network)
    if network not in plan.guarded:
        plan.guarded.append(network)


def tear_down(plan: NetworkPlan) -> list[str]:
    """Everything the sandbox made; see clean_up_prefix."""
    return clean_up_prefix(plan.prefix)


def clean_up_prefix(prefix: str) -> list[str]:
    """Removes every namespace, root-namespace link, rule and route of the sandbox with
    ``prefix`` (routes are recognized by their protocol and metric, so no other route is
    touched). Works from the prefix alone, for a crashed sandbox. Returns what it removed."""
    removed = []
    # Root ends of veths first: deleting a namespace frees its links only later, in the kernel's
    # cleanup work, and a lingering veth would block the next boot's name.
    for link in sorted(netns.links(prefix), key=lambda name: name.endswith("-br")):
        ip("link", "del", link, check=False)
        removed.append(f"link {link}")
    for namespace in netns.named(prefix):
        netns.delete(namespace)
        removed.append(f"namespace {namespace}")
    for rule in _rules():
        if str(rule.get("iif", "")).startswith(prefix):
            _delete_rule(rule)
            removed.append(f"rule iif {rule['iif']}")
    for route in _our_routes(prefix):
        _delete_route(route)
        removed.append(f"route {route.get('type', '')} {route['dst']}".replace("  ", " "))
    removed += pod_dns.remove_all(prefix)
    return removed


def _remove_node(namespace: str, veth: str) -> None:
    # Deleting the veth takes its peer at once; the namespace's own deletion would only later.
    ip("link", "del", veth, check=False)
    netns.delete(namespace)
    if netns.exists(namespace):
        raise NetworkError(f"namespace {namespace} could not be deleted")
    if _link_exists(veth):
        raise NetworkError(f"link {veth} could not be deleted")


def _guard_route(plan: NetworkPlan, cidr: str) -> None:
    ip("route", "replace", "unreachable", cidr, "proto", str(ROUTE_PROTO),
       "metric", str(plan.metric))


def _our_routes(prefix: str) -> list[dict[str, object]]:
    metric = route_metric(prefix)
    routes = json.loads(ip("-4", "-j", "route", "show", "table", "all",
                           "proto", str(ROUTE_PROTO)) or "[]")
    return [route for route in routes if route.get("metric") == metric]


def _delete_route(route: dict[str, object]) -> None:
    words = []
    if route.get("type") not in (None, "unicast"):
        words.append(str(route["type"]))
    words.append(str(route["dst"]))
    if "dev" in route:
        words += ["dev", str(route["dev"])]
    words += ["table", str(route.get("table", "main")), "proto", str(ROUTE_PROTO),
              "metric", str(route["metric"])]
    ip("route", "del", *words, check=False)


def _rules() -> list[dict[str, object]]:
    return list(json.loads(ip("-4", "-j", "rule", "show") or "[]"))


def _delete_rule(rule: dict[str, object]) -> None:
    ip("rule", "del", "priority", str(rule["priority"]), "iif", str(rule["iif"]), check=False)


def _link_exists(name: str) -> bool:
    return bool(ip("-o", "link", "show", "dev", name, check=False).strip())


def _write_sysctl(path: Path, value: str) -> None:
    # Absent when the kernel has no IPv6; nothing to turn off then.
    with contextlib.suppress(FileNotFoundError):
        path.write_text(value)
