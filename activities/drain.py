"""Drain: move every workload pod off a node through the Eviction API, honouring
PodDisruptionBudgets, and say exactly which pod and which budget is in the way when it cannot.

Each pass lists the node's pods afresh (a controller may have re-created one, a pod may have
been scheduled there by name), asks for an eviction of each that is still running, and then
waits on a watch for evicted pods to disappear. A refusal (HTTP 429) means "not yet": the pod is
tried again on the next pass. At the deadline the drain either fails with the blockers or, only
when the operator asked for it, deletes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from activities.context import (
    get_node,
    heartbeat,
    metric_meter,
    record_node_event,
    resumed,
    step_error,
)
from activities.kubeapi import (
    Kube,
    Obj,
    controller_of,
    is_terminating,
    object_key,
    pod_finished,
    selector_matches,
)
from plan.steps import DrainBlocker, DrainInput, DrainResult, StepError

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# How long a pass waits before asking again for evictions the budgets refused.
RETRY_SECONDS = 2.0
# After forced deletions, how long beyond the pods' grace periods we wait for them to go.
FORCE_MARGIN_SECONDS = 30.0
BLOCKED_METRIC = "cilium_migrate_drain_blocked_seconds"


@dataclass
class _NodePods:
    """One look at the node's pods, sorted by what the drain does with them."""

    to_evict: list[Obj] = field(default_factory=list)
    terminating: list[Obj] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[DrainBlocker] = field(default_factory=list)  # never evictable as asked


def drain_node(kube: Kube, request: DrainInput) -> DrainResult:
    node = request.target.node
    get_node(kube, node)
    clock = _BlockedClock()
    # A retried attempt continues the list of its predecessor.
    evicted: dict[str, None] = dict.fromkeys(resumed().get("evicted", []))
    deadline = time.monotonic() + request.timeout_seconds
    while True:
        pods = _look(kube, node, request)
        if pods.refused:
            raise _blocked(kube, node, pods.refused, "cannot be evicted as asked", clock)
        refusals: dict[str, DrainBlocker] = {}
        for pod in pods.to_evict:
            refusal = evict(kube, pod, request.grace_period_seconds)
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
        _wait_gone(kube, node, going, min(left, RETRY_SECONDS) if refusals else left,
                   progress)

    pods = _look(kube, node, request)
    if not pods.to_evict and not pods.terminating:  # the last ones left just in time
        return _drained(kube, node, DrainResult(evicted=list(evicted), skipped=pods.skipped),
                        clock)
    blockers = [_refusal(kube, p) or _still_terminating(p) for p in pods.to_evict]
    blockers += [_still_terminating(p) for p in pods.terminating]
    if not request.force_on_timeout:
        raise _blocked(kube, node, blockers, f"still there after {request.timeout_seconds:.0f}s",
                       clock)
    clock.refused()
    return _drained(kube, node, _force(kube, node, request, pods, evicted, clock), clock)


def _look(kube: Kube, node: str, request: DrainInput) -> _NodePods:
    found = _NodePods()
    for pod in kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")["items"]:
        name = object_key(pod)
        owner = controller_of(pod)
        if (owner or {}).get("kind") == "DaemonSet" or MIRROR_ANNOTATION in (
                pod["metadata"].get("annotations") or {}):
            found.skipped.append(name)
        elif pod_finished(pod):
            continue  # holds no resources and blocks nothing
        elif is_terminating(pod):
            found.terminating.append(pod)
        elif not request.delete_empty_dir_data and (volumes := _empty_dirs(pod)):
            found.refused.append(DrainBlocker(pod=name, reason=(
                f"uses emptyDir volume(s) {', '.join(volumes)} whose data would be lost; "
                "allow deleting emptyDir data to drain it")))
        elif owner is None and not request.evict_unmanaged:
            found.refused.append(DrainBlocker(pod=name, reason=(
                "not managed by a controller: evicted, nothing would re-create it; "
                "allow evicting unmanaged pods or move it yourself")))
        else:
            found.to_evict.append(pod)
    return found


def _empty_dirs(pod: Obj) -> list[str]:
    return [v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v]


def evict(kube: Kube, pod: Obj, grace_period_seconds: int | None) -> DrainBlocker | None:
    """Asks for one eviction; None when the pod is going (or gone), else why it was refused."""
    meta = pod["metadata"]
    body: Obj = {"apiVersion": "policy/v1", "kind": "Eviction",
                 "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    if grace_period_seconds is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
    try:
        kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                             "/eviction", body)
        return None
    except ApiException as error:
        if error.status == 404:
            return None
        if error.status == 429:  # a budget says "not now"
            return _refusal(kube, pod) or DrainBlocker(pod=object_key(pod),
                                                       reason=_status_message(error))
        if error.status == 403 and "NamespaceTerminating" in (error.body or ""):
            # No evictions in a namespace being deleted; its controller deletes the pod soon.
            return DrainBlocker(pod=object_key(pod), reason="its namespace is being deleted")
        if error.status == 500 and "DisruptionBudget" in (error.body or ""):
            # More than one budget selects the pod: the API refuses to choose.
            return DrainBlocker(pod=object_key(pod), reason=_status_message(error))
        raise


def _refusal(kube: Kube, pod: Obj) -> DrainBlocker | None:
    """The budget that currently allows no disruption of ``pod``, described for an operator."""
    namespace = pod["metadata"]["namespace"]
    labels = pod["metadata"].get("labels") or {}
    budgets = kube.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")["items"]
    for pdb in budgets:
        status = pdb.get("status", {})
        if selector_matches(pdb["spec"].get("selector"), labels) and (
                status.get("disruptionsAllowed", 0) < 1):
            return DrainBlocker(
                pod=object_key(pod), pdb=object_key(pdb),
                reason=(f"PodDisruptionBudget {object_key(pdb)} allows no disruption: needs "
                        f"{status.get('desiredHealthy', '?')} healthy, has "
                        f"{status.get('currentHealthy', '?')}"))
    return None


def _still_terminating(pod: Obj) -> DrainBlocker:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    reason = "evicted but still terminating"
    if grace is not None:
        reason += f" (grace period {grace}s)"
    elif not is_terminating(pod):
        reason = "not evicted yet"
    return DrainBlocker(pod=object_key(pod), reason=reason)


def _status_message(error: ApiException) -> str:
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        return f"eviction refused (HTTP {error.status})"
    causes = [c.get("message", "") for c in (status.get("details") or {}).get("causes") or []]
    return "; ".join(filter(None, [status.get("message", ""), *causes])) or (
        f"eviction refused (HTTP {error.status})")


def none_of(uids: set[str]) -> Callable[[list[Obj]], bool]:
    """A wait condition: none of these pods (by UID: a StatefulSet re-uses names) is left."""
    return lambda current: not any(p["metadata"]["uid"] in uids for p in current)


def _wait_gone(kube: Kube, node: str, pods: list[Obj], timeout: float,
               progress: dict[str, Any]) -> bool:
    """Waits for ``pods`` to leave the node, heartbeating ``progress`` (what a retry resumes
    from) with the pods waited for."""
    details = {**progress, "waiting_for": sorted(object_key(p) for p in pods)}
    return bool(kube.wait("/api/v1/pods", none_of({p["metadata"]["uid"] for p in pods}),
                          timeout, on_tick=lambda: heartbeat(**details),
                          fieldSelector=f"spec.nodeName={node}"))


def _force(kube: Kube, node: str, request: DrainInput, pods: _NodePods,
           evicted: dict[str, None], clock: _BlockedClock) -> DrainResult:
    """The operator chose deletion over waiting: delete what the budgets protect."""
    forced = []
    for pod in pods.to_evict:
        meta = pod["metadata"]
        body = ({"gracePeriodSeconds": request.grace_period_seconds}
                if request.grace_period_seconds is not None else None)
        kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        forced.append(object_key(pod))
    going = pods.to_evict + pods.terminating
    graces = [request.grace_period_seconds if request.grace_period_seconds is not None
              else p["spec"].get("terminationGracePeriodSeconds", 30) for p in going]
    if not _wait_gone(kube, node, going, max(graces, default=0) + FORCE_MARGIN_SECONDS,
                      {"evicted": list(evicted), "forced": forced}):
        left = _look(kube, node, request)
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
    clock.record("forced" if result.forced else "cleared")
    message = f"drained: {len(result.evicted)} pod(s) evicted"
    if result.forced:
        message += f", {len(result.forced)} deleted after the timeout ({', '.join(result.forced)})"
    if result.skipped:
        message += f", {len(result.skipped)} DaemonSet/mirror pod(s) left in place"
    record_node_event(kube, node, "CiliumMigrateDrained", message)
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
