"""The reboot step: ask the node to reboot with the policy's strategy, then wait for it to come
back.

A reboot is done when the node reports a new bootID, is Ready, and runs a Ready Cilium agent
that started after the reboot. Retries never reboot twice: a changed bootID means done, and the
heartbeat records that the strategy fired (the node-shell pod's name also holds the bootID).
"""

from __future__ import annotations

import time
from typing import Any

from activities.agent import agent_pods, agent_pods_path, agent_query
from activities.context import get_node, heartbeat, record_node_event, resumed, step_error
from activities.kubeapi import Kube, Obj, boot_id, condition_true, pod_ready
from activities.reboot.strategies import RebootStrategy
from plan.contract import RebootInput, RebootResult, StepError


def reboot_node(kube: Kube, request: RebootInput,
                known: dict[str, RebootStrategy]) -> RebootResult:
    name = request.target.node
    policy = request.policy
    strategy = known[policy.strategy]
    node = get_node(kube, name)
    earlier = resumed()
    if earlier.get("boot_id_before") != request.boot_id_before:
        earlier = {}
    deadline = time.monotonic() + policy.timeout_seconds
    still_up = boot_id(node) == request.boot_id_before
    progress: dict[str, Any] = {
        "boot_id_before": request.boot_id_before,
        "triggered": bool(earlier.get("triggered")),
        # The agent's containers before the reboot: the Ready status they still show right
        # after it is stale, so done means a Ready agent in other containers.
        "agent_containers": earlier.get("agent_containers") or (
            [c for p in agent_pods(kube, request.cilium_namespace, name) for c in _containers(p)]
            if still_up else []),
    }
    triggered = False
    if still_up and not progress["triggered"]:
        strategy.trigger(kube, node, request)
        triggered = progress["triggered"] = True
        record_node_event(kube, name, "CiliumMigrateRebootRequested",
                          f"reboot requested ({policy.strategy}); bootID before: "
                          f"{request.boot_id_before}", uid=node["metadata"].get("uid"))
    heartbeat(**progress)

    stale = set(progress["agent_containers"])
    booted = kube.wait("/api/v1/nodes", lambda nodes: _booted(nodes, request),
                       policy.timeout_seconds, on_tick=lambda: heartbeat(**progress),
                       fieldSelector=f"metadata.name={name}")
    agent = booted and kube.wait(
        agent_pods_path(request.cilium_namespace),
        lambda pods: any(pod_ready(p) and not stale & set(_containers(p)) for p in pods),
        deadline - time.monotonic(), on_tick=lambda: heartbeat(**progress), **agent_query(name))
    note = strategy.settle(kube, request, rebooted=bool(agent))
    if not booted or not agent:
        node = get_node(kube, name)
        if boot_id(node) == request.boot_id_before:
            state = "its bootID has not changed"
        elif not condition_true(node, "Ready"):
            state = "it rebooted but is not Ready"
        else:
            state = "its Cilium agent is not Ready"
        raise step_error(StepError.REBOOT_NOT_COMPLETING,
                         f"node {name} did not come back within {policy.timeout_seconds:.0f}s:"
                         f" {state}" + (f"; {note}" if note else ""))
    after = get_node(kube, name)
    record_node_event(kube, name, "CiliumMigrateRebooted",
                      f"rebooted: new bootID {boot_id(after)} (was {request.boot_id_before}), "
                      "node Ready with a new Cilium agent", uid=after["metadata"].get("uid"))
    return RebootResult(boot_id_after=boot_id(after), triggered=triggered)


def _booted(nodes: list[Obj], request: RebootInput) -> bool:
    if not nodes:
        raise step_error(StepError.NODE_GONE, f"node {request.target.node} was deleted")
    node = nodes[0]
    return boot_id(node) != request.boot_id_before and condition_true(node, "Ready")


def _containers(pod: Obj) -> list[str]:
    return [s["containerID"] for s in pod.get("status", {}).get("containerStatuses") or []
            if s.get("containerID")]
