"""choose_plan against a test namespace standing for the host's root namespace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.network import netns
from sandbox.network.netns import NetworkError, ip
from sandbox.network.plan import MAX_NODES, NetworkPlan, choose_plan, prefix_for

POD_CIDR = "10.244.0.0/16"


@pytest.fixture
def host(prefix: str) -> Iterator[str]:
    """An empty namespace for choose_plan to inspect; removed with the prefix."""
    name = f"{prefix}-host"
    netns.create(name)
    yield name


def _bridge(host: str, name: str, *addresses: str) -> None:
    ip("link", "add", name, "type", "bridge", netns=host)
    ip("link", "set", name, "up", netns=host)
    for address in addresses:
        ip("addr", "add", address, "dev", name, netns=host)


def test_empty_host_gets_the_first_candidate(prefix: str, host: str, tmp_path: Path) -> None:
    plan = choose_plan(tmp_path, ["cp-1", "worker-1"], ["10.244.0.0/16"], netns=host,
                       prefix=prefix)
    assert plan.underlay == "198.18.0.0/24"
    assert plan.gateway == "198.18.0.1"
    assert plan.node_addresses == {"cp-1": "198.18.0.2", "worker-1": "198.18.0.3"}
    assert plan.bridge == f"{prefix}-br"
    assert plan.guarded == [POD_CIDR]
    assert NetworkPlan.model_validate_json(plan.model_dump_json()) == plan


def test_ranges_in_use_are_skipped(prefix: str, host: str, tmp_path: Path) -> None:
    _bridge(host, "cmabcd-br", "198.18.0.1/24")  # another sandbox's
    ip("route", "add", "blackhole", "198.18.1.0/25", netns=host)
    plan = choose_plan(tmp_path, ["cp-1"], [POD_CIDR], netns=host, prefix=prefix)
    assert plan.underlay == "198.18.2.0/24"


def test_its_own_leftovers_do_not_count(prefix: str, host: str, tmp_path: Path) -> None:
    _bridge(host, f"{prefix}-br", "198.18.0.1/24")
    plan = choose_plan(tmp_path, ["cp-1"], [POD_CIDR], netns=host, prefix=prefix)
    assert plan.underlay == "198.18.0.0/24"


def test_guarded_range_on_a_host_address_is_refused(prefix: str, host: str,
                                                    tmp_path: Path) -> None:
    _bridge(host, "cni0", "10.244.3.1/24")  # an old flannel install's
    with pytest.raises(NetworkError, match=r"10\.244\.0\.0/16.*10\.244\.3\.1/24 on cni0"):
        choose_plan(tmp_path, ["cp-1"], [POD_CIDR], netns=host, prefix=prefix)


def test_guarded_range_on_a_host_route_is_refused(prefix: str, host: str,
                                                  tmp_path: Path) -> None:
    ip("route", "add", "blackhole", "10.0.0.0/8", netns=host)
    with pytest.raises(NetworkError, match=r"10\.244\.0\.0/16.*blackhole 10\.0\.0\.0/8"):
        choose_plan(tmp_path, ["cp-1"], [POD_CIDR], netns=host, prefix=prefix)


def test_default_routes_are_no_conflict(prefix: str, host: str, tmp_path: Path) -> None:
    _bridge(host, "uplink", "192.0.2.2/24")
    ip("route", "add", "default", "via", "192.0.2.1", netns=host)
    for half in ("0.0.0.0/1", "128.0.0.0/1"):  # a VPN client's
        ip("route", "add", half, "via", "192.0.2.1", netns=host)
    plan = choose_plan(tmp_path, ["cp-1"], [POD_CIDR], netns=host, prefix=prefix)
    assert plan.underlay == "198.18.0.0/24"


def test_node_count_limit(prefix: str, host: str, tmp_path: Path) -> None:
    nodes = [f"worker-{i}" for i in range(MAX_NODES)]
    plan = choose_plan(tmp_path, nodes, [POD_CIDR], netns=host, prefix=prefix)
    assert plan.node_addresses["worker-249"] == "198.18.0.251"
    assert len({plan.node_veth(node) for node in nodes}) == MAX_NODES
    assert max(len(plan.node_veth(node)) for node in nodes) <= 15
    with pytest.raises(NetworkError, match="at most 250"):
        choose_plan(tmp_path, [*nodes, "one-more"], [POD_CIDR], netns=host, prefix=prefix)


def test_prefix_from_state_dir(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert re.fullmatch(r"cm[0-9a-f]{4}", prefix_for(first))
    assert prefix_for(first) == prefix_for(tmp_path / "x" / ".." / "a")
    assert prefix_for(first) != prefix_for(second)


def test_plan_names_and_addresses() -> None:
    plan = NetworkPlan(prefix="cm1234", bridge="cm1234-br", underlay="198.18.0.0/24",
                       gateway="198.18.0.1",
                       node_addresses={"cp-1": "198.18.0.2", "worker-1": "198.18.0.3"},
                       guarded=[POD_CIDR])
    assert plan.node_netns("worker-1") == "cm1234-worker-1"
    assert plan.node_veth("worker-1") == "cm1234-v3"
    macs = {*plan.node_macs("cp-1"), *plan.node_macs("worker-1"), plan.bridge_mac()}
    assert len(macs) == 5
    with pytest.raises(NetworkError, match="not in the network plan"):
        plan.node_netns("worker-2")
    with pytest.raises(ValueError):
        NetworkPlan(prefix="cm-too-long-prefix", bridge="b", underlay="198.18.0.0/24",
                    gateway="198.18.0.1")
