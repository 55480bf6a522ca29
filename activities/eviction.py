"""Evicting one pod through the Eviction API, and saying why the API refused.

Shared by the drain (a node's pods) and the recycling of pods left on flannel (anywhere): both
honour PodDisruptionBudgets, and both must name the budget that is in the way.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from kubernetes.client.rest import ApiException

from activities.kubeapi import Kube, Obj, object_key, selector_matches
from plan.contract import DrainBlocker

# How long to wait before asking again for evictions the budgets refused.
RETRY_SECONDS = 2.0


def evict(kube: Kube, pod: Obj, grace_period_seconds: int | None) -> DrainBlocker | None:
    """Asks for one eviction; None when the pod is going (or gone), else why it was refused.

    Errors that say nothing about the pod (connection, rights, server faults) are raised.
    """
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
        return refusal_of(kube, pod, error)


def refusal_of(kube: Kube, pod: Obj, error: ApiException) -> DrainBlocker | None:
    """What an eviction's error answer means for ``pod``: None when the pod is already gone,
    a blocker when the API said "not now", and the error itself re-raised otherwise."""
    if error.status == 404:
        return None
    if error.status == 429:  # a budget says "not now"
        return budget_refusal(kube, pod) or DrainBlocker(pod=object_key(pod),
                                                         reason=_status_message(error))
    if error.status == 403 and "NamespaceTerminating" in (error.body or ""):
        # No evictions in a namespace being deleted; its controller deletes the pod soon.
        return DrainBlocker(pod=object_key(pod), reason="its namespace is being deleted")
    if error.status == 500 and "DisruptionBudget" in (error.body or ""):
        # More than one budget selects the pod: the API refuses to choose.
        return DrainBlocker(pod=object_key(pod), reason=_status_message(error))
    raise error


def budget_refusal(kube: Kube, pod: Obj) -> DrainBlocker | None:
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


def _status_message(error: ApiException) -> str:
    """The message of the API's Status answer, with its causes."""
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
