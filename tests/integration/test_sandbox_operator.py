"""The Cilium operator of the real chart, as the simulator plays it: it registers the CRDs of
its own version, and its leader hands each CiliumNode a block of the cluster pool, which the
agents wait for before they are Ready."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from plan.spec import DEFAULT_CILIUM_VERSION
from sandbox.cilium_release import find_release
from tests.conftest import CILIUM_POOL, Sandbox
from tests.helpers import wait_for

pytestmark = pytest.mark.sandbox

OPERATOR = "/apis/apps/v1/namespaces/kube-system/deployments/cilium-operator"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CILIUM_NODES = "/apis/cilium.io/v2/ciliumnodes"
# A CRD the agents do not wait for, so removing it for a while disturbs no agent start.
SPARE_CRD = "ciliumgatewayclassconfigs.cilium.io"


def release_crds() -> set[str]:
    release = find_release(DEFAULT_CILIUM_VERSION)
    return {yaml.safe_load(path.read_text())["metadata"]["name"] for path in release.crd_files()}


def cilium_crds(sandbox: Sandbox) -> set[str]:
    return {c["metadata"]["name"] for c in sandbox.kube.get(CRDS)["items"]
            if c["spec"]["group"] == "cilium.io"}


def operator_pods(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list(sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                                 labelSelector="io.cilium/app=operator")["items"])


def scale_operator(sandbox: Sandbox, replicas: int) -> None:
    sandbox.kube.patch(OPERATOR, {"spec": {"replicas": replicas}})
    if replicas == 0:
        wait_for(lambda: not operator_pods(sandbox), "the operator pods to go", timeout=120)
    else:
        wait_for(lambda: (sandbox.kube.get(OPERATOR)["status"].get("readyReplicas") or 0)
                 == replicas, f"{replicas} operator replicas Ready", timeout=120)


@pytest.fixture
def operator_stopped(sandbox: Sandbox, cilium: None) -> Iterator[None]:
    """The operator scaled to 0 for one test; its two replicas back afterwards."""
    scale_operator(sandbox, 0)
    try:
        yield
    finally:
        scale_operator(sandbox, 2)


def agent_on(sandbox: Sandbox, node: str) -> dict[str, Any] | None:
    pods = sandbox.kube.get("/api/v1/namespaces/kube-system/pods", labelSelector="k8s-app=cilium",
                            fieldSelector=f"spec.nodeName={node}")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return live[0] if live else None


def ready(pod: dict[str, Any] | None) -> bool:
    return pod is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in pod["status"].get("conditions", []))


def new_agent(sandbox: Sandbox, node: str) -> str:
    """Deletes the node's agent pod; returns the UID of the one the DaemonSet brings."""
    old = wait_for(lambda: agent_on(sandbox, node), f"an agent on {node}")
    sandbox.kube.delete(f"/api/v1/namespaces/kube-system/pods/{old['metadata']['name']}")
    new = wait_for(lambda: (p := agent_on(sandbox, node)) and p["metadata"]["uid"] !=
                   old["metadata"]["uid"] and p, f"a new agent on {node}")
    return str(new["metadata"]["uid"])


def pod_cidrs(cilium_node: dict[str, Any] | None) -> list[str]:
    return list(((cilium_node or {}).get("spec", {}).get("ipam") or {}).get("podCIDRs") or [])


def test_the_operator_registers_the_crds_of_its_version(
        sandbox: Sandbox, cilium: None) -> None:
    # The chart ships no CRD: every one of the release is there because the operator ran.
    assert release_crds() <= cilium_crds(sandbox)
    scale_operator(sandbox, 0)
    try:
        sandbox.kube.delete(f"{CRDS}/{SPARE_CRD}")
        wait_for(lambda: SPARE_CRD not in cilium_crds(sandbox), "the CRD to be deleted")
        # No operator, nobody registers it; an agent starting meanwhile (the yardstick for
        # "long enough") does not wait for it.
        yardstick = sandbox.workers()[-2]
        uid = new_agent(sandbox, yardstick)
        wait_for(lambda: ready(p := agent_on(sandbox, yardstick)) and p["metadata"]["uid"] == uid,
                 "the yardstick agent to be Ready", timeout=120)
        assert SPARE_CRD not in cilium_crds(sandbox)
    finally:
        scale_operator(sandbox, 2)
    wait_for(lambda: SPARE_CRD in cilium_crds(sandbox), "the operator to register it again",
             timeout=120)


def test_every_agent_node_has_a_distinct_block_of_the_pool_owned_by_its_node(
        sandbox: Sandbox, cilium: None) -> None:
    nodes = {n["metadata"]["name"]: n["metadata"]["uid"]
             for n in sandbox.kube.get("/api/v1/nodes")["items"]}
    wait_for(lambda: all(ready(agent_on(sandbox, n)) for n in nodes), "every agent Ready",
             timeout=180)
    cilium_nodes = {c["metadata"]["name"]: c for c in sandbox.kube.get(CILIUM_NODES)["items"]}
    assert set(cilium_nodes) == set(nodes)
    blocks = [pod_cidrs(c)[0] for c in cilium_nodes.values()]
    assert len(set(blocks)) == len(blocks), blocks
    for name, cilium_node in cilium_nodes.items():
        block = ipaddress.ip_network(pod_cidrs(cilium_node)[0])
        assert block.subnet_of(ipaddress.ip_network(CILIUM_POOL)) and block.prefixlen == 24
        # The agent's nodediscovery creates it, owned by its Node (garbage-collected with it).
        assert cilium_node["metadata"]["ownerReferences"] == [{
            "apiVersion": "v1", "kind": "Node", "name": name, "uid": nodes[name]}]


def test_without_an_operator_a_new_node_agent_waits_for_its_block(
        sandbox: Sandbox, operator_stopped: None, claim_worker: Any) -> None:
    fresh = claim_worker()
    # Restarting the control plane's agent disturbs no test: none moves that node.
    known = next(n.name for n in sandbox.topology.nodes if n.control_plane)
    kept = pod_cidrs(sandbox.kube.get(f"{CILIUM_NODES}/{known}"))
    assert kept
    # The fresh node's CiliumNode goes: to its next agent the node is new to Cilium.
    sandbox.kube.delete(f"{CILIUM_NODES}/{fresh}")
    wait_for(lambda: sandbox.kube.get_or_none(f"{CILIUM_NODES}/{fresh}") is None,
             "the CiliumNode to go")
    fresh_uid = new_agent(sandbox, fresh)
    known_uid = new_agent(sandbox, known)

    # An agent whose CiliumNode already has its block starts without the operator...
    wait_for(lambda: ready(p := agent_on(sandbox, known)) and p["metadata"]["uid"] == known_uid,
             "the agent with a block to be Ready", timeout=120)
    assert pod_cidrs(sandbox.kube.get(f"{CILIUM_NODES}/{known}")) == kept
    # ...the other has created its CiliumNode without podCIDRs and waits, never Ready.
    created = wait_for(lambda: sandbox.kube.get_or_none(f"{CILIUM_NODES}/{fresh}"),
                       "the agent to create its CiliumNode")
    assert pod_cidrs(created) == []
    agent = agent_on(sandbox, fresh)
    assert agent is not None and agent["metadata"]["uid"] == fresh_uid
    assert agent["status"]["phase"] == "Running" and not ready(agent)

    scale_operator(sandbox, 2)
    block = wait_for(lambda: pod_cidrs(sandbox.kube.get(f"{CILIUM_NODES}/{fresh}")),
                     "the operator to allocate the block", timeout=120)[0]
    wait_for(lambda: ready(agent_on(sandbox, fresh)), "the agent to be Ready", timeout=120)
    others = [pod_cidrs(c)[0] for c in sandbox.kube.get(CILIUM_NODES)["items"]
              if c["metadata"]["name"] != fresh]
    assert block not in others
    assert ipaddress.ip_network(block).subnet_of(ipaddress.ip_network(CILIUM_POOL))


def test_when_the_leading_operator_goes_the_other_replica_allocates(
        sandbox: Sandbox, cilium: None, claim_worker: Any) -> None:
    """Whichever replica leads, deleting either one leaves a replica that allocates."""
    node = claim_worker()
    for victim in [p["metadata"]["name"] for p in operator_pods(sandbox)]:
        sandbox.kube.delete(f"/api/v1/namespaces/kube-system/pods/{victim}")
        sandbox.kube.delete(f"{CILIUM_NODES}/{node}")
        wait_for(lambda: sandbox.kube.get_or_none(f"{CILIUM_NODES}/{node}") is None,
                 "the CiliumNode to go")
        new_agent(sandbox, node)
        wait_for(lambda: pod_cidrs(sandbox.kube.get_or_none(f"{CILIUM_NODES}/{node}")),
                 "a block from the remaining replicas", timeout=120)
        wait_for(lambda: ready(agent_on(sandbox, node)), "the agent to be Ready", timeout=120)


def test_the_charts_other_pods_run_as_plain_host_network_workloads(
        sandbox: Sandbox, cilium: None) -> None:
    """cilium-envoy (hostNetwork, no personality) runs Ready on every node with its node's
    address, like the operator replicas."""
    addresses = {n.name: n.internal_ip for n in sandbox.topology.nodes}
    def envoys() -> list[dict[str, Any]] | None:
        pods = sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                                labelSelector="k8s-app=cilium-envoy")["items"]
        return pods if len(pods) == len(addresses) and all(map(ready, pods)) else None

    for pod in wait_for(envoys, "cilium-envoy Ready on every node", timeout=120):
        assert pod["spec"]["hostNetwork"]
        assert pod["status"]["podIP"] == addresses[pod["spec"]["nodeName"]]
    for pod in operator_pods(sandbox):
        assert pod["status"]["podIP"] == addresses[pod["spec"]["nodeName"]]
