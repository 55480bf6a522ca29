"""Where the simulated nodes reach the API server, and Cilium agents that cannot.

The sandbox publishes the node-visible address as kubeadm does; an agent turns Ready only if
the address its env names (KUBERNETES_SERVICE_HOST/PORT, else the `kubernetes` ClusterIP through
kube-proxy) reaches the API server from its node. Otherwise it crash-loops, saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from activities.kubeapi import Kube
from sandbox import cluster
from sandbox.controlplane import ADVERTISE_ADDRESS
from sandbox.toolchain import Toolchain
from sandbox.topology import Topology
from tests.conftest import CHART, MIGRATION_VALUES, Sandbox
from tests.helpers import agent_outcomes, current_agents, wait_for

pytestmark = pytest.mark.sandbox

KUBE_PROXY = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy"


def server_in(kubeconfig_text: str) -> str:
    return str(yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]["server"])


def test_the_sandbox_publishes_the_node_visible_api_server_as_kubeadm_does(
        sandbox: Sandbox) -> None:
    address = sandbox.topology.api_server
    assert address is not None and address.host == ADVERTISE_ADDRESS
    expected = f"https://{ADVERTISE_ADDRESS}:{address.port}"
    # The admin kubeconfig's URL is this machine's loopback: not what nodes use.
    assert urlparse(sandbox.kube.server).hostname == "127.0.0.1"

    kube_proxy = sandbox.kube.get("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
    assert server_in(kube_proxy["data"]["kubeconfig.conf"]) == expected
    cluster_info = sandbox.kube.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
    assert server_in(cluster_info["data"]["kubeconfig"]) == expected
    [endpoint_slice] = sandbox.kube.get(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        labelSelector="kubernetes.io/service-name=kubernetes")["items"]
    assert endpoint_slice["endpoints"][0]["addresses"] == [ADVERTISE_ADDRESS]
    assert [p["port"] for p in endpoint_slice["ports"]] == [address.port]
    service = sandbox.kube.get("/api/v1/namespaces/default/services/kubernetes")
    assert service["spec"]["ports"][0]["targetPort"] == address.port


class Cluster:
    """A small sandbox of its own: these tests install Cilium with values that break it."""

    def __init__(self, state_dir: Path, toolchain: Toolchain) -> None:
        self.sandbox = Sandbox(state_dir, toolchain, Kube(str(state_dir / "kubeconfig")),
                               Topology.load(state_dir / "topology.json"))
        self.kube = self.sandbox.kube
        self.nodes = [n.name for n in self.sandbox.topology.nodes]

    def install_cilium(self, tmp: Path, **overrides: Any) -> dict[str, str]:
        """Installs or upgrades Cilium with the migration values and ``overrides``; returns
        each node's agent outcome once every agent of this template is Ready or crash-looping."""
        values = tmp / "values.json"
        values.write_text(json.dumps({**MIGRATION_VALUES, **overrides}))
        self.sandbox.helm("upgrade", "--install", "cilium", str(CHART), "-n", "kube-system",
                          "-f", str(values))
        return self.outcomes()

    def outcomes(self) -> dict[str, str]:
        return dict(wait_for(lambda: agent_outcomes(self.kube, self.nodes),
                             "every agent to be Ready or crash-looping", 120))


@pytest.fixture(scope="module")
def small(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("api-endpoint") / "state"
    cluster.up(state_dir, nodes=2, control_planes=1)
    try:
        yield Cluster(state_dir, toolchain)
    finally:
        cluster.down(state_dir)


def test_agents_told_the_admin_kubeconfig_address_crash_loop(small: Cluster,
                                                             tmp_path: Path) -> None:
    loopback = urlparse(small.kube.server)
    outcomes = small.install_cilium(tmp_path, k8sServiceHost=loopback.hostname,
                                    k8sServicePort=loopback.port)
    for node, outcome in outcomes.items():
        assert outcome.startswith("crash-loop: cannot reach the API server at "
                                  f"127.0.0.1:{loopback.port}"), (node, outcome)
        assert "127.0.0.1 is this node itself" in outcome


def test_agents_told_the_node_visible_address_turn_ready(small: Cluster, tmp_path: Path) -> None:
    address = small.sandbox.topology.api_server
    assert address is not None
    outcomes = small.install_cilium(tmp_path, k8sServiceHost=address.host,
                                    k8sServicePort=address.port)
    assert outcomes == dict.fromkeys(small.nodes, "ready")


def test_agents_without_an_address_use_the_service_through_kube_proxy(
        small: Cluster, tmp_path: Path) -> None:
    outcomes = small.install_cilium(tmp_path)  # MIGRATION_VALUES set no k8sServiceHost
    assert outcomes == dict.fromkeys(small.nodes, "ready")
    for agent in current_agents(small.kube).values():
        names = {e["name"] for e in agent["spec"]["containers"][0].get("env") or []}
        assert "KUBERNETES_SERVICE_HOST" not in names


def test_without_kube_proxy_on_its_node_an_agent_on_the_service_crash_loops(
        small: Cluster, tmp_path: Path) -> None:
    assert small.install_cilium(tmp_path) == dict.fromkeys(small.nodes, "ready")
    lonely = small.nodes[-1]
    small.kube.patch(KUBE_PROXY, {"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn",
                                  "values": [lonely]}]}]}}}}}}})
    try:
        wait_for(lambda: not small.kube.get("/api/v1/namespaces/kube-system/pods",
                                            labelSelector="k8s-app=kube-proxy",
                                            fieldSelector=f"spec.nodeName={lonely}")["items"],
                 f"kube-proxy to leave {lonely}")
        old = current_agents(small.kube)[lonely]
        small.kube.delete(f"/api/v1/namespaces/kube-system/pods/{old['metadata']['name']}")
        wait_for(lambda: (a := current_agents(small.kube).get(lonely)) and
                 a["metadata"]["uid"] != old["metadata"]["uid"], "a new agent")
        outcomes = small.outcomes()
        assert outcomes[lonely].startswith("crash-loop: cannot reach the API server at "
                                           "10.96.0.1:443"), outcomes
        assert "no kube-proxy runs Ready on this node" in outcomes[lonely]
        assert all(o == "ready" for n, o in outcomes.items() if n != lonely), outcomes
    finally:
        small.kube.patch(KUBE_PROXY, {"spec": {"template": {"spec": {"affinity": None}}}})
