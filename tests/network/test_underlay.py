"""The underlay on this machine: real namespaces, a real bridge, real routes."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.network import netns
from sandbox.network.netns import NetworkError, ip
from sandbox.network.plan import ROUTE_PROTO, NetworkPlan
from sandbox.network.underlay import (
    boot_node,
    clean_up_prefix,
    create_underlay,
    guard,
    route_pods,
    shut_down_node,
    tear_down,
    unroute_pods,
)
from tests.network.tools import ping_argv

PlanFactory = Callable[..., NetworkPlan]


def _route_get(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "route", "get", address, *extra], capture_output=True,
                          text=True)


def _leftovers(prefix: str, metric: int) -> list[str]:
    found = [f"namespace {name}" for name in netns.named(prefix)]
    found += [f"link {name}" for name in netns.links(prefix)]
    found += [f"rule {rule}" for rule in json.loads(ip("-4", "-j", "rule", "show"))
              if str(rule.get("iif", "")).startswith(prefix)]
    routes = json.loads(ip("-4", "-j", "route", "show", "table", "all"))
    found += [f"route {route}" for route in routes
              if route.get("metric") == metric or str(route.get("dev", "")).startswith(prefix)]
    return found


def test_nodes_ping_each_other_over_the_bridge(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1", "n2"])
    create_underlay(plan)
    boot_node(plan, "n1")
    boot_node(plan, "n2")
    for node, peer in (("n1", "n2"), ("n2", "n1")):
        result = netns.run_in(plan.node_netns(node), ping_argv(plan.node_ip(peer), 5))
        assert result.returncode == 0, result.stdout + result.stderr
    result = netns.run_in(plan.node_netns("n1"), ping_argv(plan.gateway, 5))
    assert result.returncode == 0, result.stdout + result.stderr


def test_node_namespace_looks_like_a_booted_machine(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1"])
    create_underlay(plan)
    boot_node(plan, "n1")
    namespace = plan.node_netns("n1")
    assert netns.links("", netns=namespace) == ["lo", "eth0"]
    addresses = json.loads(ip("-4", "-j", "addr", "show", "dev", "eth0", netns=namespace))
    assert [(a["local"], a["prefixlen"]) for a in addresses[0]["addr_info"]] == [
        (plan.node_ip("n1"), 24)]
    eth0 = json.loads(ip("-j", "link", "show", "dev", "eth0", netns=namespace))[0]
    assert eth0["address"] == plan.node_macs("n1")[0]
    routes = json.loads(ip("-4", "-j", "route", "show", "default", netns=namespace))
    assert [(r["gateway"], r["dev"]) for r in routes] == [(plan.gateway, "eth0")]
    forwarding = netns.run_in(namespace, ["cat", "/proc/sys/net/ipv4/ip_forward"])
    assert forwarding.stdout.strip() == "1"
    port = json.loads(ip("-j", "link", "show", plan.node_veth("n1")))[0]
    assert port["master"] == plan.bridge
    # Kept though the port's MAC is lower: the gateway's MAC doesn't move under ARP caches.
    assert port["address"] < plan.bridge_mac()
    assert json.loads(ip("-j", "link", "show", plan.bridge))[0]["address"] == plan.bridge_mac()


def test_reboot_wipes_what_the_last_boot_made(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1"])
    create_underlay(plan)
    boot_node(plan, "n1")
    namespace = plan.node_netns("n1")
    ip("link", "add", "cni0", "type", "bridge", netns=namespace)
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "600"])
    try:
        boot_node(plan, "n1")
        assert sleeper.wait(timeout=30) != 0  # ended by the reboot
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert "cni0" not in netns.links("", netns=namespace)
    assert netns.links("", netns=namespace) == ["lo", "eth0"]
    assert netns.pids(namespace) == []
    assert netns.links(plan.prefix) == [plan.bridge, plan.node_veth("n1")]


def test_shut_down_node_removes_namespace_and_veth(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1", "n2"])
    create_underlay(plan)
    boot_node(plan, "n1")
    boot_node(plan, "n2")
    shut_down_node(plan, "n1")
    assert not netns.exists(plan.node_netns("n1"))
    assert netns.links(plan.prefix) == [plan.bridge, plan.node_veth("n2")]
    shut_down_node(plan, "n1")  # already down: nothing to do


def test_boot_needs_the_underlay(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1"])
    with pytest.raises(NetworkError, match="create_underlay"):
        boot_node(plan, "n1")


def test_guarded_range_is_refused_here_and_pod_routes_go_via_the_node(
        make_plan: PlanFactory) -> None:
    plan = make_plan(["n1", "n2"])
    create_underlay(plan)
    create_underlay(plan)  # idempotent
    guarded = ipaddress.IPv4Network(plan.guarded[0])
    inside = str(guarded.network_address + 5)
    unrouted = _route_get(inside)
    assert unrouted.returncode != 0 and "No route to host" in unrouted.stderr
    with socket.socket() as sock:
        # Refused at once by the unreachable route: nothing is sent anywhere.
        assert sock.connect_ex((inside, 9)) in (errno.EHOSTUNREACH, errno.ENETUNREACH)

    boot_node(plan, "n1")
    boot_node(plan, "n2")
    pods_n1 = str(next(guarded.subnets(new_prefix=24)))
    route_pods(plan, pods_n1, "n1")
    assert f"via {plan.node_ip('n1')} dev {plan.bridge}" in _route_get(inside).stdout
    route_pods(plan, pods_n1, "n2")  # moved: replaces
    assert f"via {plan.node_ip('n2')} dev {plan.bridge}" in _route_get(inside).stdout
    others = str(guarded.network_address + 256 + 5)  # the next /24: still guarded
    assert "No route to host" in _route_get(others).stderr
    unroute_pods(plan, pods_n1)
    unroute_pods(plan, pods_n1)
    assert "No route to host" in _route_get(inside).stderr


def test_guard_adds_a_range_later(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1"], guarded=2)
    later = plan.guarded.pop()
    create_underlay(plan)
    address = str(ipaddress.IPv4Network(later).network_address + 1)
    assert _route_get(address).returncode == 0  # by the host's default route, before
    guard(plan, later)
    assert later in plan.guarded
    assert "No route to host" in _route_get(address).stderr


def test_nodes_are_not_routed_past_this_machine(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1"])
    create_underlay(plan)
    boot_node(plan, "n1")
    # A packet from a node for an outside address meets the bridge's refusal rule, whatever
    # this host's ip_forward; for the gateway it is delivered locally.
    outside = _route_get("203.0.113.9", "from", plan.node_ip("n1"), "iif", plan.bridge)
    assert outside.returncode != 0 and "No route to host" in outside.stderr
    local = _route_get(plan.gateway, "from", plan.node_ip("n1"), "iif", plan.bridge)
    assert local.returncode == 0 and local.stdout.startswith("local"), local.stderr


def test_tear_down_leaves_nothing(make_plan: PlanFactory) -> None:
    plan = make_plan(["n1", "n2"])
    create_underlay(plan)
    boot_node(plan, "n1")
    boot_node(plan, "n2")
    route_pods(plan, str(next(ipaddress.IPv4Network(plan.guarded[0]).subnets(new_prefix=24))),
               "n1")
    assert _leftovers(plan.prefix, plan.metric)
    removed = tear_down(plan)
    assert any(item.startswith("namespace") for item in removed)
    assert _leftovers(plan.prefix, plan.metric) == []
    tear_down(plan)  # again: nothing left to do


def test_clean_up_prefix_after_a_crash_spares_other_routes(make_plan: PlanFactory,
                                                           tmp_path: Path) -> None:
    plan = make_plan(["n1", "n2"], guarded=3)
    foreign_guard, foreign_plain = plan.guarded[1:]
    del plan.guarded[1:]
    create_underlay(plan)
    boot_node(plan, "n1")
    boot_node(plan, "n2")
    sleeper = netns.spawn_in(plan.node_netns("n1"), ["sleep", "600"],
                             log=tmp_path / "sleep.log")
    # Routes the sandbox did not make: the same protocol with another sandbox's metric, and
    # one of the host's own.
    ip("route", "add", "unreachable", foreign_guard, "proto", str(ROUTE_PROTO),
       "metric", str(plan.metric + 1))
    ip("route", "add", "unreachable", foreign_plain)
    try:
        clean_up_prefix(plan.prefix)
        assert sleeper.wait(timeout=30) != 0
        assert _leftovers(plan.prefix, plan.metric) == []
        kept = ip("-4", "route", "show", "type", "unreachable")
        assert foreign_guard in kept and foreign_plain in kept
    finally:
        ip("route", "del", "unreachable", foreign_guard, "proto", str(ROUTE_PROTO),
           "metric", str(plan.metric + 1), check=False)
        ip("route", "del", "unreachable", foreign_plain, check=False)
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()

