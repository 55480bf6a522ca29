"""Small helpers for tests that drive the sandbox cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from activities.kubeapi import Kube
from sandbox.simulator.faults import Fault, read_faults, write_faults
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


def set_fault(state_dir: Path, node: str, fault: Fault, on: bool = True) -> None:
    """Turns one fault on or off for one node in the sandbox's faults.yaml."""
    path = state_dir / "faults.yaml"
    faults = read_faults(path)
    kinds = faults.setdefault(node, set())
    (kinds.add if on else kinds.discard)(fault)
    write_faults(path, faults)


class FaultSwitch:
    """Sets a fault on nodes and clears every one it set at the end (a fixture's teardown)."""

    def __init__(self, state_dir: Path, fault: Fault) -> None:
        self.state_dir, self.fault, self.nodes = state_dir, fault, set[str]()

    def __call__(self, node: str, on: bool = True) -> None:
        set_fault(self.state_dir, node, self.fault, on)
        (self.nodes.add if on else self.nodes.discard)(node)

    def clear_all(self) -> None:
        for node in sorted(self.nodes):
            set_fault(self.state_dir, node, self.fault, on=False)


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


def agent_outcome(pod: dict[str, Any]) -> str | None:
    """A Cilium agent pod's fate: "ready", "crash-loop: <why it exited>", or None (starting)."""
    status = pod.get("status", {})
    if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])):
        return "ready"
    for container in status.get("containerStatuses") or []:
        if (container.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            return f"crash-loop: {last.get('message', '')}"
    return None


def current_agents(kube: Kube, namespace: str = "kube-system") -> dict[str, dict[str, Any]]:
    """The Cilium agent pods running the DaemonSet's current template (its env), by node."""
    daemonset = kube.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/cilium")
    env = daemonset["spec"]["template"]["spec"]["containers"][0].get("env")
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="k8s-app=cilium")
    return {p["spec"]["nodeName"]: p for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName")
            and p["spec"]["containers"][0].get("env") == env}


def agent_outcomes(kube: Kube, nodes: list[str], namespace: str = "kube-system"
                   ) -> dict[str, str] | None:
    """Every node's current agent outcome, or None while any is still starting."""
    agents = current_agents(kube, namespace)
    outcomes = {n: agent_outcome(agents[n]) if n in agents else None for n in nodes}
    return None if None in outcomes.values() else {n: str(o) for n, o in outcomes.items()}
