"""Nodes that are containers on this machine's kernel, as kind's are (`sandbox up
--shared-kernel`): restarting a node's container through the sandbox's `docker` restarts its
kubelet and every pod container, and keeps the bootID, which comes from the shared kernel."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from sandbox import cluster
from sandbox.simulator.faults import Fault
from tests.conftest import Sandbox, temporary_namespace
from tests.helpers import FaultSwitch, deployment, ready_pods, wait_for

pytestmark = pytest.mark.sandbox


def docker(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cluster.docker_shim(sandbox.state_dir)), *args],
                          capture_output=True, text=True, timeout=120)


def started_at(sandbox: Sandbox, node: str) -> datetime:
    inspected = docker(sandbox, "inspect", "-f", "{{.State.StartedAt}}", node)
    assert inspected.returncode == 0, inspected.stderr
    return datetime.fromisoformat(inspected.stdout.strip())


def node_status(sandbox: Sandbox, node: str) -> dict[str, Any]:
    status: dict[str, Any] = sandbox.kube.get(f"/api/v1/nodes/{node}")["status"]
    return status


def ready_condition(sandbox: Sandbox, node: str) -> dict[str, Any]:
    return next(c for c in node_status(sandbox, node)["conditions"] if c["type"] == "Ready")


def agent(sandbox: Sandbox, node: str) -> dict[str, Any]:
    [pod] = sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                             labelSelector="k8s-app=cilium",
                             fieldSelector=f"spec.nodeName={node}")["items"]
    return dict(pod)


def container(pod: dict[str, Any]) -> tuple[str, int]:
    status = pod["status"]["containerStatuses"][0]
    return status["containerID"], status["restartCount"]


@pytest.fixture
def namespace(shared_kernel_sandbox: Sandbox) -> Iterator[str]:
    yield from temporary_namespace(shared_kernel_sandbox.kube)


@pytest.fixture
def stuck_in_restart(shared_kernel_sandbox: Sandbox) -> Iterator[FaultSwitch]:
    """Keeps a node's kubelet from coming back after its container restarts; cleared at the end."""
    switch = FaultSwitch(shared_kernel_sandbox.state_dir, Fault.REBOOT_NEVER_COMPLETES)
    yield switch
    switch.clear_all()


def pin(sandbox: Sandbox, namespace: str, name: str, node: str) -> dict[str, Any]:
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment(name, 1, node=node))
    return dict(wait_for(lambda: ready_pods(sandbox, namespace, f"app={name}"),
                         f"{name} on {node}")[0])


def test_a_container_restart_keeps_the_boot_id_and_restarts_every_container(
        shared_kernel_sandbox: Sandbox, namespace: str) -> None:
    sandbox = shared_kernel_sandbox
    node = sandbox.claim_worker()
    workload = pin(sandbox, namespace, "survivor", node)
    boot_id = node_status(sandbox, node)["nodeInfo"]["bootID"]
    agent_before = container(agent(sandbox, node))
    before = started_at(sandbox, node)

    restarted = docker(sandbox, "restart", node)
    assert (restarted.returncode, restarted.stdout.strip()) == (0, node), restarted.stderr
    assert started_at(sandbox, node) > before  # docker restart returns once it started again

    # The kubelet comes back and, the pod sandboxes being gone with the old processes, starts
    # every pod again: same pod, next restartCount, new container, an address from the CNI.
    again = wait_for(lambda: [p for p in ready_pods(sandbox, namespace, "app=survivor")
                              if container(p)[1] == 1], "the workload to restart")[0]
    assert again["metadata"]["uid"] == workload["metadata"]["uid"]
    assert container(again)[0] != container(workload)[0]
    pod_cidr = sandbox.kube.get(f"/api/v1/nodes/{node}")["spec"]["podCIDR"]
    assert ipaddress.ip_address(again["status"]["podIP"]) in ipaddress.ip_network(pod_cidr)
    agent_after = wait_for(lambda: (c := container(agent(sandbox, node)))[1] > agent_before[1]
                           and c, "the Cilium agent to restart")
    assert agent_after[0] != agent_before[0]
    assert ready_condition(sandbox, node)["status"] == "True"
    assert node_status(sandbox, node)["nodeInfo"]["bootID"] == boot_id  # the host's kernel


def test_while_the_kubelet_is_down_the_node_and_its_pods_keep_their_last_status(
        shared_kernel_sandbox: Sandbox, namespace: str, stuck_in_restart: Any) -> None:
    sandbox = shared_kernel_sandbox
    node = sandbox.claim_worker()
    workload = pin(sandbox, namespace, "stale", node)
    ready = ready_condition(sandbox, node)
    stuck_in_restart(node)

    assert docker(sandbox, "restart", node).returncode == 0
    # No graceful node shutdown in a kind node: its kubelet is stopped and writes nothing, so
    # the node still shows Ready and the pod its old, running container until the kubelet is back.
    assert ready_condition(sandbox, node) == ready
    [stale] = ready_pods(sandbox, namespace, "app=stale")
    assert container(stale) == container(workload)

    stuck_in_restart(node, on=False)
    wait_for(lambda: [p for p in ready_pods(sandbox, namespace, "app=stale")
                      if container(p)[1] == 1], "the workload to restart once the kubelet is up")


def test_a_host_reboot_asked_from_a_node_shell_pod_restarts_the_container(
        shared_kernel_sandbox: Sandbox, namespace: str) -> None:
    sandbox = shared_kernel_sandbox
    node = sandbox.claim_worker()
    boot_id = node_status(sandbox, node)["nodeInfo"]["bootID"]
    before = started_at(sandbox, node)
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reboot"},
        "spec": {"nodeName": node, "hostPID": True, "restartPolicy": "Never",
                 "containers": [{"name": "shell", "image": "busybox:1.36",
                                 "command": ["nsenter", "--target", "1", "--", "systemctl",
                                             "reboot"],
                                 "securityContext": {"privileged": True}}]}})

    wait_for(lambda: started_at(sandbox, node) > before, "the node's container to restart")
    wait_for(lambda: container(agent(sandbox, node))[1] >= 1, "the kubelet to restart the agent")
    assert node_status(sandbox, node)["nodeInfo"]["bootID"] == boot_id


def test_the_sandbox_reports_its_docker_which_knows_only_node_containers(
        shared_kernel_sandbox: Sandbox) -> None:
    sandbox = shared_kernel_sandbox
    report = cluster.status(sandbox.state_dir)
    assert report["docker"] == str(cluster.docker_shim(sandbox.state_dir.resolve()))
    assert os.access(report["docker"], os.X_OK)
    assert "docker" in cluster.describe(report)
    for command in (("inspect", "no-such-node"), ("restart", "no-such-node")):
        missing = docker(sandbox, *command)
        assert missing.returncode == 1
        assert missing.stderr.strip() == ("Error response from daemon: No such container: "
                                          "no-such-node")
