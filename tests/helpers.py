"""Small helpers for tests that drive the sandbox cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Sandbox


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Polls until ``condition()`` is truthy; these waits are for the cluster, not for time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def deployment(name: str, replicas: int, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx"}],
                            "terminationGracePeriodSeconds": 1}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    }


def ready_pods(sandbox: Sandbox, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = sandbox.kube.get(f"/api/v1/namespaces/{namespace}/pods",
                            labelSelector=selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in p.get("status", {}).get("conditions", []))]


def evict(sandbox: Sandbox, namespace: str, pod: str) -> None:
    sandbox.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace}})
