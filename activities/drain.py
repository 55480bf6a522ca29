"""Drain: move every workload pod off a node through the Eviction API, honouring
PodDisruptionBudgets, and say exactly which pod and which budget is in the way when it cannot.

The node's pods are listed once and then followed on a watch, so each pass sees them as they
are now (a controller may have re-created one, a pod may have been scheduled there by name)
without listing again: it asks for an eviction of each that is still running, and then waits
for evicted pods to disappear. A refusal (HTTP 429) means "not yet": the pod is
tried again on the next pass. At the deadline the drain either fails with the blockers or, only
when the operator asked for it, deletes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from activities.context import (
    get_node,
    heartbeat,
    metric_meter,
    record_node_event,
    resumed,
    step_error,
)
from activities.eviction import RETRY_SECONDS, budget_refusal, evict, none_of
from activities.kubeapi import (
    Followed,
    Kube,
    Obj,
    controller_of,
    is_terminating,
    object_key,
    pod_finished,
)
from plan.contract import DrainBlocker, DrainInput, DrainResult, StepError
from plan.policies import DrainPolicy

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# After forced deletions, how long beyond the pods' grace periods we wait for them to go.
FORCE_MARGIN_SECONDS = 30.0
BLOCKED_METRIC = "cilium_migrate_drain_blocked_seconds"


@dataclass
class NodePods:
    """One look at the node's pods, sorted by what the drain does with them."""

    to_evict: list[Obj] = field(default_factory=list)
    terminating: list[Obj] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[DrainBlocker] = field(default_factory=list)  # never evictable as asked


def drain_node(kube: Kube, request: DrainInput) -> DrainResult:
    node, policy = request.target.node, request.policy
    on_node = kube.follow("/api/v1/pods", {"fieldSelector": f"spec.nodeName={node}"})
    if not on_node.objects:
        # Nothing at all runs there, not even a DaemonSet's pod: the node may be gone (its
        # pods are garbage-collected with it). Only then is it worth a request to know.
        get_node(kube, node)
    clock = _BlockedClock()
    # A retried attempt continues the list of its predecessor.
    evicted: dict[str, None] = dict.fromkeys(resumed().get("evicted", []))
    deadline = time.monotonic() + policy.timeout_seconds
    while True:
        pods = sort_pods(on_node.objects, policy)
        if pods.refused:
            raise _blocked(kube, node, pods.refused, "cannot be evicted as asked", clock)
        refusals: dict[str, DrainBlocker] = {}
        for pod in pods.to_evict:
            refusal = evict(kube, pod, policy.grace_period_seconds)
            if refusal is None:
                evicted[object_key(pod)] = None
            else:
                refusals[object_key(pod)] = refusal
                clock.refused()
        progress = {"evicted": list(evicted),
                    "blockers": [b.model_dump() for b in refusals.values()]}
        heartbeat(**progress)
        going = pods.to_evict + pods.terminating
        if not going:
            return _drained(kube, node, DrainResult(evicted=list(evicted), skipped=pods.skipped),
                            clock)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # Evicted pods leave within their grace period; refused ones are asked again soon.
        _wait_gone(on_node, going, min(left, RETRY_SECONDS) if refusals else left, progress)

    pods = sort_pods(on_node.objects, policy)
    if not pods.to_evict and not pods.terminating:  # the last ones left just in time
        return _drained(kube, node, DrainResult(evicted=list(evicted), skipped=pods.skipped),
                        clock)
    blockers = [budget_refusal(kube, p) or _still_terminating(p) for p in pods.to_evict]
    blockers += [_still_terminating(p) for p in pods.terminating]
    if not policy.force_on_timeout:
        raise _blocked(kube, node, blockers, f"still there after {policy.timeout_seconds:.0f}s",
                       clock)
    clock.refused()
    return _drained(kube, node, _force(kube, on_node, node, policy, pods, evicted, clock),
                    clock)


def sort_pods(pods: list[Obj], policy: DrainPolicy) -> NodePods:
    """What the drain does with each of a node's pods: leaves DaemonSet and mirror pods (their
    controller would put them straight back), ignores finished ones (they hold nothing),
    waits for terminating ones, refuses what the policy forbids evicting, evicts the rest."""
    found = NodePods()
    for pod in pods:
        name = object_key(pod)
        if left_in_place(pod):
            found.skipped.append(name)
        elif pod_finished(pod):
            continue
        elif is_terminating(pod):
            found.terminating.append(pod)
        elif not policy.delete_empty_dir_data and (volumes := empty_dir_volumes(pod)):
            found.refused.append(DrainBlocker(pod=name, reason=(
                f"uses emptyDir volume(s) {', '.join(volumes)} whose data would be lost; "
                "allow deleting emptyDir data to drain it")))
        elif controller_of(pod) is None and not policy.evict_unmanaged:
            found.refused.append(DrainBlocker(pod=name, reason=(
                "not managed by a controller: evicted, nothing would re-create it; "
                "allow evicting unmanaged pods or move it yourself")))
        else:
            found.to_evict.append(pod)
    return found


def left_in_place(pod: Obj) -> bool:
    """DaemonSet and mirror pods: their controller (or the kubelet) would put them straight
    back, so a drain leaves them, as `kubectl drain --ignore-daemonsets` does."""
    return ((controller_of(pod) or {}).get("kind") == "DaemonSet"
            or MIRROR_ANNOTATION in (pod["metadata"].get("annotations") or {}))


def empty_dir_volumes(pod: Obj) -> list[str]:
    """The names of the pod's emptyDir volumes: data an eviction deletes."""
    return [v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v]


def _still_terminating(pod: Obj) -> DrainBlocker:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    reason = "evicted but still terminating"
    if grace is not None:
        reason += f" (grace period {grace}s)"
    elif not is_terminating(pod):
        reason = "not evicted yet"
    return DrainBlocker(pod=object_key(pod), reason=reason)


def _wait_gone(on_node: Followed, pods: list[Obj], timeout: float,
               progress: dict[str, Any]) -> bool:
    """Waits for ``pods`` to leave the node, heartbeating ``progress`` (what a retry resumes
    from) with the pods waited for."""
    details = {**progress, "waiting_for": sorted(object_key(p) for p in pods)}
    return bool(on_node.wait(none_of({p["metadata"]["uid"] for p in pods}), timeout,
                             on_tick=lambda: heartbeat(**details)))


def _force(kube: Kube, on_node: Followed, node: str, policy: DrainPolicy, pods: NodePods,
           evicted: dict[str, None], clock: _BlockedClock) -> DrainResult:
    """The operator chose deletion over waiting: delete what the budgets protect."""
    forced = []
    for pod in pods.to_evict:
        meta = pod["metadata"]
        body = ({"gracePeriodSeconds": policy.grace_period_seconds}
                if policy.grace_period_seconds is not None else None)
        kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        forced.append(object_key(pod))
    going = pods.to_evict + pods.terminating
    graces = [policy.grace_period_seconds if policy.grace_period_seconds is not None
              else p["spec"].get("terminationGracePeriodSeconds", 30) for p in going]
    if not _wait_gone(on_node, going, max(graces, default=0) + FORCE_MARGIN_SECONDS,
                      {"evicted": list(evicted), "forced": forced}):
        left = sort_pods(on_node.objects, policy)
        raise _blocked(kube, node,
                       [_still_terminating(p) for p in left.to_evict + left.terminating],
                       "still there after being deleted", clock)
    return DrainResult(evicted=list(evicted), skipped=pods.skipped, forced=forced)


class _BlockedClock:
    """How long the drain was held up, for the `cilium_migrate_drain_blocked_seconds`
    histogram: from the first refused eviction (or the start, when it ends blocked without
    one) to the moment the drain ends."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first_refusal: float | None = None

    def refused(self) -> None:
        if self.first_refusal is None:
            self.first_refusal = time.monotonic()

    def record(self, outcome: str) -> None:
        """``outcome``: blocked (the drain failed), cleared (refusals, then done), forced."""
        if outcome == "cleared" and self.first_refusal is None:
            return  # never held up: nothing to record
        since = self.first_refusal if self.first_refusal is not None else self.started
        metric_meter().create_histogram_float(
            BLOCKED_METRIC, "How long drains were held up by refused evictions", "s",
        ).record(time.monotonic() - since, {"outcome": outcome})


def _drained(kube: Kube, node: str, result: DrainResult, clock: _BlockedClock) -> DrainResult:
    """A drain that went through leaves no event of its own (its result is in the node's
    progress); one that had to delete pods says so, as an operator must know of it."""
    clock.record("forced" if result.forced else "cleared")
    if result.forced:
        record_node_event(kube, node, "CiliumMigrateDrainForced",
                          f"drained: {len(result.evicted)} pod(s) evicted, "
                          f"{len(result.forced)} deleted after the timeout "
                          f"({', '.join(result.forced)})", type="Warning")
    return result


def _blocked(kube: Kube, node: str, blockers: list[DrainBlocker], why: str,
             clock: _BlockedClock) -> Exception:
    clock.record("blocked")
    pdbs = sorted({b.pdb for b in blockers if b.pdb})
    record_node_event(kube, node, "CiliumMigrateDrainBlocked",
                      f"drain blocked, {why}: pods {', '.join(b.pod for b in blockers)}"
                      + (f"; PodDisruptionBudgets {', '.join(pdbs)}" if pdbs else ""),
                      type="Warning")
    described = "; ".join(f"pod {b.pod}: {b.reason}" for b in blockers)
    return step_error(StepError.DRAIN_BLOCKED, f"drain of {node} blocked, {why}: {described}",
                      [b.model_dump() for b in blockers])
