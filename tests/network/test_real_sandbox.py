"""The real-network sandbox itself: real flanneld, real CNI plugins, real packets between pods,
and Cilium's tunnel on flannel's port failing for real."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

from activities.kubeapi import Kube
from sandbox import cluster
from sandbox.network import netns
from sandbox.toolchain import Toolchain
from sandbox.topology import Topology
from tests.conftest import CHART, MIGRATION_VALUES
from tests.helpers import wait_for
from tests.network.real_sandbox import (
    converged_matrix,
    deploy_echo,
    require_real_network,
    wait_for_echo,
)


def test_pods_reach_each_other_across_flannels_vxlan(real_sandbox: tuple[Path, Kube]) -> None:
    state_dir, kube = real_sandbox
    topology = Topology.load(state_dir / "topology.json")
    assert topology.network is not None
    nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes")["items"]}
    for name, node in nodes.items():
        # flanneld itself published its VTEP: only a real flanneld knows its device's MAC.
        backend = json.loads(node["metadata"]["annotations"][
            "flannel.alpha.coreos.com/backend-data"])
        assert backend["VtepMAC"] and backend["VNI"] == 1
        assert node["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == \
            topology.network.node_addresses[name]
        assert "flannel.1" in netns.ip("-o", "link", "show", netns=topology.network.node_netns(
            name))
    deploy_echo(kube)
    pods = wait_for_echo(kube, nodes=3)
    for node, pod in pods.items():
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
            nodes[node]["spec"]["podCIDR"]), "the flannel plugin's host-local range"
    matrix = converged_matrix(kube, pods)
    assert matrix and all(matrix.values()), f"unreached: {[k for k, v in matrix.items() if not v]}"


def test_cilium_on_flannels_vxlan_port_cannot_set_up_its_tunnel(
        real_sandbox: tuple[Path, Kube], toolchain: Toolchain, tmp_path: Path) -> None:
    """What the preflight's tunnel-port rule prevents, made visible: the kernel refuses a
    second VXLAN socket on flannel's port, so every agent exits and none turns Ready."""
    state_dir, kube = real_sandbox
    values = tmp_path / "values.json"
    values.write_text(json.dumps({**MIGRATION_VALUES, "tunnelPort": 8472}))
    subprocess.run([str(toolchain["helm"]), "--kubeconfig", str(state_dir / "kubeconfig"),
                    "install", "cilium", str(CHART), "-n", "kube-system", "-f", str(values)],
                   check=True, capture_output=True)

    def crashed_agents() -> list[str]:
        pods = kube.get("/api/v1/namespaces/kube-system/pods",
                        labelSelector="k8s-app=cilium")["items"]
        return [s["lastState"]["terminated"]["message"] for p in pods
                for s in p.get("status", {}).get("containerStatuses") or []
                if (s.get("lastState") or {}).get("terminated")]

    messages = wait_for(lambda: len(crashed_agents()) == 3 and crashed_agents(),
                        "every agent to exit", 120)
    assert all("Address already in use" in m and "8472" in m for m in messages), messages
    assert not any(s.get("ready") for p in kube.get(
        "/api/v1/namespaces/kube-system/pods", labelSelector="k8s-app=cilium")["items"]
        for s in p["status"].get("containerStatuses") or [])


def leftovers(prefix: str) -> list[str]:
    """Namespaces, links and routes on this host that carry the sandbox's prefix."""
    from sandbox.network.plan import ROUTE_PROTO, route_metric

    routes = [line for line in netns.ip("route", "show", "proto", str(ROUTE_PROTO)).splitlines()
              if f"metric {route_metric(prefix)}" in line]
    return [*netns.named(prefix), *netns.links(prefix), *routes]


def test_status_says_which_datapath_runs_and_down_leaves_nothing_behind(
        toolchain: Toolchain, tmp_path: Path) -> None:
    require_real_network()
    state_dir = tmp_path / "state"
    cluster.up(state_dir, nodes=2, control_planes=1, network="real")
    try:
        network = cluster.status(state_dir)["network"]
        assert network["mode"] == "real" and "stand-in" in network["cilium_datapath"]
        topology = Topology.load(state_dir / "topology.json")
        assert topology.network is not None
        prefix = topology.network.prefix
        assert leftovers(prefix), "the sandbox made namespaces, links and routes"
    finally:
        cluster.down(state_dir)
    assert leftovers(prefix) == []


def test_the_next_up_removes_what_a_crashed_sandbox_left(
        toolchain: Toolchain, tmp_path: Path) -> None:
    require_real_network()
    crashed, fresh = tmp_path / "crashed", tmp_path / "fresh"
    cluster.up(crashed, nodes=2, control_planes=1, network="real")
    topology = Topology.load(crashed / "topology.json")
    assert topology.network is not None
    state = cluster.SandboxState.load(crashed)
    for pid in state.pids.values():  # every process dies at once: nobody tears anything down
        os.kill(pid, signal.SIGKILL)
    # SIGKILL is delivered at once, but a process with many threads takes a moment to end.
    wait_for(lambda: not any(state.running().values()), "the killed processes to end")
    assert leftovers(topology.network.prefix), "a crash leaves the network behind"
    cluster.up(fresh, nodes=2, control_planes=1, network="real")
    try:
        assert leftovers(topology.network.prefix) == []
    finally:
        cluster.down(fresh)
