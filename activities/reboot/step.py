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

from activities.agent import agent_pods_path, agent_query
from activities.context import heartbeat, record_node_event, resumed, step_error
from activities.kubeapi import Followed, Kube, Obj, boot_id, condition_true, pod_ready
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
    # The node and its agent pods, each listed once here and then followed on a watch
    # through every stage of the wait.
    nodes = kube.follow("/api/v1/nodes", {"fieldSelector": f"metadata.name={name}"})
    agents = kube.follow(agent_pods_path(request.cilium_namespace), agent_query(name))
    node = _the_node(nodes.objects, name)
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
            [c for p in agents.objects for c in _containers(p)] if still_up else []),
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
    rebooted = _await_new_witness(nodes, strategy, request, deadline, tick)
    agent = rebooted and agents.wait(
        lambda pods: any(pod_ready(p) and not stale & set(_containers(p)) for p in pods),
        deadline - time.monotonic(), on_tick=tick)
    ready = agent and nodes.wait(lambda found: _ready(found, name),
                                 deadline - time.monotonic(), on_tick=tick)
    note = strategy.settle(kube, request, rebooted=bool(ready))
    after = _the_node(nodes.objects, name)  # as the watch last saw it
    if not ready:
        if not rebooted:
            state = f"its {strategy.witness_name} has not changed"
        elif not condition_true(after, "Ready"):
            state = "it rebooted but is not Ready"
        else:
            state = "its Cilium agent is not Ready"
        message = (f"node {name} did not come back within {policy.timeout_seconds:.0f}s:"
                   f" {state}" + (f"; {note}" if note else ""))
        record_node_event(kube, name, "CiliumMigrateRebootNotCompleting", message,
                          type="Warning", uid=after["metadata"].get("uid"))
        raise step_error(StepError.REBOOT_NOT_COMPLETING, message)
    # A reboot that came back records no event of its own: the verification that follows does.
    return RebootResult(boot_id_after=boot_id(after),
                        boot_witness_after=strategy.boot_witness(kube, after),
                        triggered=triggered)


def _await_new_witness(nodes: Followed, strategy: RebootStrategy, request: RebootInput,
                       deadline: float, tick: Callable[[], None]) -> bool:
    """Waits until the strategy reads another witness than the snapshot's; False at the
    deadline. A witness on the node object is seen as soon as the watch delivers it; one read
    outside the cluster (a container's start time) is read again at least every
    WITNESS_POLL_SECONDS, each round resuming the same watch."""

    def changed(found: list[Obj]) -> bool:
        node = _the_node(found, request.target.node)
        return strategy.boot_witness(nodes.kube, node) != request.before.boot_witness

    while True:
        remaining = deadline - time.monotonic()
        if nodes.wait(changed, min(remaining, WITNESS_POLL_SECONDS), on_tick=tick):
            return True
        if remaining <= WITNESS_POLL_SECONDS:
            return False


def _the_node(found: list[Obj], name: str) -> Obj:
    if not found:
        raise step_error(StepError.NODE_GONE, f"node {name} no longer exists")
    return found[0]


def _ready(nodes: list[Obj], name: str) -> bool:
    return condition_true(_the_node(nodes, name), "Ready")


def _containers(pod: Obj) -> list[str]:
    return [s["containerID"] for s in pod.get("status", {}).get("containerStatuses") or []
            if s.get("containerID")]
