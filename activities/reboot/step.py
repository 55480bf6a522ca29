"""The reboot step: ask the node to reboot with the policy's strategy, then wait for it to come
back.

A reboot is done when the node's boot witness has changed (the bootID of a machine; for a kind
node, a container sharing its host's kernel and so its bootID, the container's start time),
the node runs a Ready Cilium agent in containers that started after the reboot, and the node is
Ready. The witness from before comes from the snapshot, taken before the reboot was ever asked
for, so retries never reboot twice: a changed witness means the reboot happened. The heartbeat
also records that the strategy fired, for strategies that cannot tell (a command), and the
node-shell pod's name holds the witness it reboots away from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from activities.agent import agent_pods, agent_pods_path, agent_query
from activities.context import get_node, heartbeat, record_node_event, resumed, step_error
from activities.kubeapi import Kube, Obj, boot_id, condition_true, pod_ready
from activities.reboot.strategies import RebootStrategy
from plan.contract import RebootInput, RebootResult, StepError

# How often a witness the node object does not carry (a container's start time) is read again;
# a change of the node object is seen at once.
WITNESS_POLL_SECONDS = 2.0


def reboot_node(kube: Kube, request: RebootInput,
                known: dict[str, RebootStrategy]) -> RebootResult:
    name = request.target.node
    policy = request.policy
    strategy = known[policy.strategy]
    before = request.before.boot_witness
    node = get_node(kube, name)
    earlier = resumed()
    if earlier.get("boot_witness_before") != before:
        earlier = {}
    deadline = time.monotonic() + policy.timeout_seconds
    still_up = strategy.boot_witness(kube, node) == before
    progress: dict[str, Any] = {
        "boot_witness_before": before,
        "triggered": bool(earlier.get("triggered")),
        # The agent's containers before the reboot: the Ready status they still show right
        # after it is stale, so done means a Ready agent in other containers.
        "agent_containers": earlier.get("agent_containers") or (
            [c for p in agent_pods(kube, request.cilium_namespace, name) for c in _containers(p)]
            if still_up else []),
    }
    triggered = False
    if still_up and not progress["triggered"]:
        # Before anything reboots: a retry after a crash must know which agent is the old one.
        heartbeat(**progress)
        strategy.trigger(kube, node, request)
        triggered = progress["triggered"] = True
        record_node_event(kube, name, "CiliumMigrateRebootRequested",
                          f"reboot requested ({policy.strategy}); {strategy.witness_name} "
                          f"before: {before}", uid=node["metadata"].get("uid"))
    heartbeat(**progress)

    def tick() -> None:
        heartbeat(**progress)

    stale = set(progress["agent_containers"])
    rebooted = _await_new_witness(kube, strategy, request, deadline, tick)
    agent = rebooted and kube.wait(
        agent_pods_path(request.cilium_namespace),
        lambda pods: any(pod_ready(p) and not stale & set(_containers(p)) for p in pods),
        deadline - time.monotonic(), on_tick=tick, **agent_query(name))
    ready = agent and kube.wait("/api/v1/nodes", lambda nodes: _ready(nodes, name),
                                deadline - time.monotonic(), on_tick=tick,
                                fieldSelector=f"metadata.name={name}")
    note = strategy.settle(kube, request, rebooted=bool(ready))
    after = get_node(kube, name)
    if not ready:
        if not rebooted:
            state = f"its {strategy.witness_name} has not changed"
        elif not condition_true(after, "Ready"):
            state = "it rebooted but is not Ready"
        else:
            state = "its Cilium agent is not Ready"
        raise step_error(StepError.REBOOT_NOT_COMPLETING,
                         f"node {name} did not come back within {policy.timeout_seconds:.0f}s:"
                         f" {state}" + (f"; {note}" if note else ""))
    witness_after = strategy.boot_witness(kube, after)
    record_node_event(kube, name, "CiliumMigrateRebooted",
                      f"rebooted: {strategy.witness_name} {witness_after} (was {before}), "
                      f"bootID {boot_id(after)}, node Ready with a new Cilium agent",
                      uid=after["metadata"].get("uid"))
    return RebootResult(boot_id_after=boot_id(after), boot_witness_after=witness_after,
                        triggered=triggered)


def _await_new_witness(kube: Kube, strategy: RebootStrategy, request: RebootInput,
                       deadline: float, tick: Callable[[], None]) -> bool:
    """Waits until the strategy reads another witness than the snapshot's; False at the
    deadline. Each round lists the node afresh, so a witness read outside the cluster is read
    again at least every WITNESS_POLL_SECONDS."""
    name = request.target.node

    def changed(nodes: list[Obj]) -> bool:
        if not nodes:
            raise step_error(StepError.NODE_GONE, f"node {name} was deleted")
        return strategy.boot_witness(kube, nodes[0]) != request.before.boot_witness

    while True:
        remaining = deadline - time.monotonic()
        if kube.wait("/api/v1/nodes", changed, min(remaining, WITNESS_POLL_SECONDS),
                     on_tick=tick, fieldSelector=f"metadata.name={name}"):
            return True
        if remaining <= WITNESS_POLL_SECONDS:
            return False


def _ready(nodes: list[Obj], name: str) -> bool:
    if not nodes:
        raise step_error(StepError.NODE_GONE, f"node {name} was deleted")
    return condition_true(nodes[0], "Ready")


def _containers(pod: Obj) -> list[str]:
    return [s["containerID"] for s in pod.get("status", {}).get("containerStatuses") or []
            if s.get("containerID")]
