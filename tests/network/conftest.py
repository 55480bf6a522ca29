"""Fixtures for tests that build real namespaces, links and routes: root and iproute2 only.

Each test gets a random prefix; everything made with it is removed afterwards, pass or fail.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from activities.kubeapi import Kube
from sandbox import cluster
from sandbox.network.plan import NetworkPlan, host_entries
from sandbox.network.underlay import clean_up_prefix
from sandbox.toolchain import Toolchain
from tests.network.real_sandbox import require_real_network


@pytest.fixture
def netroot() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, links and routes")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` (apt-get install -y iproute2)")


@pytest.fixture
def prefix(netroot: None) -> Iterator[str]:
    # "cmt": never a sandbox's own prefix ("cm" and 4 hex digits), fixed length so one test's
    # prefix never starts another's.
    value = "cmt" + secrets.token_hex(3)[:5]
    try:
        yield value
    finally:
        clean_up_prefix(value)


def free_range(prefix: str, block: str, new_prefix: int = 24, count: int = 1) -> list[str]:
    """Random subnets of ``block`` that no address or route of the root namespace overlaps."""
    taken = [entry.network for entry in host_entries(prefix)]
    subnets = list(ipaddress.IPv4Network(block).subnets(new_prefix=new_prefix))
    random.shuffle(subnets)
    free = [str(s) for s in subnets if not any(s.overlaps(network) for network in taken)]
    assert len(free) >= count, f"no {count} free /{new_prefix} in {block}"
    return free[:count]


@pytest.fixture
def make_plan(prefix: str) -> Callable[..., NetworkPlan]:
    """A plan in a random free test range (not the first candidate choose_plan would take, so
    a sandbox starting meanwhile does not collide), guarding a random free test range."""

    def make(nodes: list[str], guarded: int = 1) -> NetworkPlan:
        underlay = ipaddress.IPv4Network(free_range(prefix, "198.19.128.0/17")[0])
        hosts = list(underlay.hosts())
        return NetworkPlan(
            prefix=prefix, bridge=f"{prefix}-br", underlay=str(underlay),
            gateway=str(hosts[0]),
            node_addresses={node: str(hosts[i + 1]) for i, node in enumerate(nodes)},
            guarded=free_range(prefix, "10.200.0.0/13", 20, count=guarded))

    return make


@pytest.fixture
def real_sandbox(toolchain: Toolchain, tmp_path: Path) -> Iterator[tuple[Path, Kube]]:
    """A 1+2 sandbox on the real network, down again afterwards: its state dir and a client."""
    require_real_network()
    state_dir = tmp_path / "state"
    cluster.up(state_dir, nodes=3, control_planes=1, network="real")
    try:
        yield state_dir, Kube(str(state_dir / "kubeconfig"))
    finally:
        cluster.down(state_dir)
