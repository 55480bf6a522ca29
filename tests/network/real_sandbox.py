"""Helpers for tests on a real-network sandbox (`sandbox up --network real`): an agnhost echo
DaemonSet and requests between its pods through the API server's pod proxy."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from activities.kubeapi import Kube
from tests.helpers import wait_for

ECHO_NAMESPACE = "echo"
ECHO_PORT = 8080
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.59"


def require_real_network() -> None:
    """Skips the test, with the reason, where the real network cannot run."""
    from sandbox.nettools import find_network_tools, real_network_unsupported
    from sandbox.toolchain import ToolchainError

    problem = real_network_unsupported()
    if problem is not None:
        pytest.skip(f"real-network sandbox: {problem}")
    try:
        find_network_tools()
    except ToolchainError as error:
        pytest.skip(str(error))


def deploy_echo(kube: Kube) -> None:
    """`agnhost netexec` on every node, the control plane included."""
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": ECHO_NAMESPACE}})
    kube.create(f"/apis/apps/v1/namespaces/{ECHO_NAMESPACE}/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"matchLabels": {"app": "echo"}}, "template": {
            "metadata": {"labels": {"app": "echo"}},
            "spec": {"tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "echo", "image": AGNHOST, "args": [
                         "netexec", f"--http-port={ECHO_PORT}"]}]}}}})


def echo_pods(kube: Kube) -> dict[str, dict[str, Any]]:
    """Running echo pods with an address, by node."""
    pods = kube.get(f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods",
                    labelSelector="app=echo")["items"]
    return {p["spec"]["nodeName"]: p for p in pods
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp") and all(
                c.get("ready") for c in p["status"].get("containerStatuses") or [{}])}


def wait_for_echo(kube: Kube, nodes: int, pool: str | None = None) -> dict[str, dict[str, Any]]:
    def ready() -> bool:
        pods = echo_pods(kube)
        return len(pods) == nodes and (pool is None or all(
            ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(pool)
            for p in pods.values()))
    wait_for(ready, f"{nodes} echo pods{f' in {pool}' if pool else ''}", 120)
    return echo_pods(kube)


def dial(kube: Kube, source: dict[str, Any], target_ip: str) -> list[str]:
    """What ``source`` got when it asked ``target_ip`` for its hostname over HTTP: the names
    that answered (the pod's name), an empty list when nothing did."""
    path = (f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods/"
            f"{source['metadata']['name']}:{ECHO_PORT}/proxy/dial")
    try:
        answer = kube.request("GET", path, query={
            "request": "hostname", "protocol": "http", "host": target_ip,
            "port": str(ECHO_PORT), "tries": "1"}, timeout=15)
    except ApiException as error:
        if error.status in (400, 500, 502, 503):  # agnhost reports a failed dial as an error
            return []
        raise
    responses: list[str] = answer.get("responses") or []
    return responses


def dial_matrix(kube: Kube, pods: dict[str, dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """For every ordered pair of nodes: did the echo pod on the first reach the second's?"""
    return {(a, b): dial(kube, pods[a], pods[b]["status"]["podIP"]) == [
        pods[b]["metadata"]["name"]] for a in pods for b in pods if a != b}


def converged_matrix(kube: Kube, pods: dict[str, dict[str, Any]],
                     timeout: float = 60.0) -> dict[tuple[str, str], bool]:
    """The dial matrix once every pair answers, or as it last was when ``timeout`` ends. Echo
    pods turn Ready before every flanneld has programmed the others' VTEPs (each learns a node
    from its annotations, as in any cluster a node just joined), so a first dial can fail."""
    matrix: dict[tuple[str, str], bool] = {}

    def every_pair() -> bool:
        nonlocal matrix
        matrix = dial_matrix(kube, pods)
        return all(matrix.values())

    with contextlib.suppress(AssertionError):  # the caller's assertion names the pairs
        wait_for(every_pair, "every pair to answer", timeout)
    return matrix
