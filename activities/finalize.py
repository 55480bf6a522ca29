"""The finalize steps, once every node runs Cilium: recycle the pods still holding a flannel
address, roll the agents once more, and remove flannel.
"""

from __future__ import annotations

import time

from kubernetes.client.rest import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import heartbeat, resumed, step_error
from activities.eviction import RETRY_SECONDS, evict, none_of
from activities.kubeapi import Kube, controller_of, is_terminating, object_key
from activities.pod_addresses import range_of, running_pods
from activities.rollout import (
    NOT_READY_YET,
    daemonset_moves,
    daemonset_progress,
    daemonset_rolled_out,
    wait_while_progressing,
)
from plan.contract import (
    DrainBlocker,
    RecycleInput,
    RecycleResult,
    RemoveFlannelInput,
    RemoveFlannelResult,
    RolloutRestartInput,
    StepError,
)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def rollout_restart(kube: Kube, request: RolloutRestartInput) -> None:
    """Restarts every pod of the DaemonSet once per ``restarted_at`` value, and waits as long
    as the rollout makes progress (``timeout_seconds`` is how long it may stand still)."""
    stamp = request.restarted_at or activity.info().scheduled_time.isoformat()
    daemonsets = f"/apis/apps/v1/namespaces/{request.namespace}/daemonsets"
    path = f"{daemonsets}/{request.daemonset}"
    ds = kube.get_or_none(path)
    if ds is None:
        raise step_error(StepError.CLUSTER_UNHEALTHY,
                         f"DaemonSet {request.namespace}/{request.daemonset} not found")
    template = ds["spec"]["template"]["metadata"].get("annotations") or {}
    if template.get(RESTARTED_AT) != stamp:
        kube.patch(path, {"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: stamp}}}}})
    ds = wait_while_progressing(kube, daemonsets, request.daemonset, daemonset_rolled_out,
                                daemonset_moves, request.timeout_seconds)
    if not daemonset_rolled_out(ds):
        raise ApplicationError(
            f"rollout of {request.namespace}/{request.daemonset} made no progress for "
            f"{request.timeout_seconds:.0f}s: {daemonset_progress(ds)}", type=NOT_READY_YET)


def recycle_pods(kube: Kube, request: RecycleInput) -> RecycleResult:
    """Evicts the controller-owned pods that hold an address outside the Cilium pools when
    the step starts, so their controllers re-create them on Cilium; budgets are honoured until
    the deadline. Each is evicted once: a replacement that lands on a node still on flannel is
    not chased. Pods no controller owns are only reported: nothing would bring them back."""
    leftovers = [p for p in running_pods(kube, request.namespaces)
                 if range_of(p["status"]["podIP"], request.cilium_pools) is None]
    unmanaged = sorted(object_key(p) for p in leftovers if controller_of(p) is None)
    targets = {p["metadata"]["uid"] for p in leftovers if controller_of(p) is not None}
    recycled: dict[str, None] = dict.fromkeys(resumed().get("recycled", []))
    deadline = time.monotonic() + request.timeout_seconds
    while True:
        pending = [p for p in running_pods(kube, request.namespaces)
                   if p["metadata"]["uid"] in targets]
        refusals: list[DrainBlocker] = []
        for pod in pending:
            if not is_terminating(pod):
                refusal = evict(kube, pod, None)
                if refusal is None:
                    recycled[object_key(pod)] = None
                else:
                    refusals.append(refusal)
        heartbeat(recycled=list(recycled))
        if not pending:
            return RecycleResult(recycled=list(recycled), unmanaged=unmanaged)
        left = deadline - time.monotonic()
        if left <= 0:
            blockers = refusals or [DrainBlocker(pod=object_key(p),
                                                 reason="evicted but still terminating")
                                    for p in pending]
            raise step_error(
                StepError.RECYCLE_BLOCKED, "recycling pods did not finish: " + "; ".join(
                    f"pod {b.pod}: {b.reason}" for b in blockers),
                [b.model_dump() for b in blockers])
        # Evicted pods leave within their grace period; refused ones are asked again soon.
        namespaces = request.namespaces or []
        kube.wait(f"/api/v1/namespaces/{namespaces[0]}/pods" if len(namespaces) == 1
                  else "/api/v1/pods", none_of({p["metadata"]["uid"] for p in pending}),
                  min(left, RETRY_SECONDS) if refusals else left,
                  on_tick=lambda: heartbeat(recycled=list(recycled)))


def remove_flannel(kube: Kube, request: RemoveFlannelInput) -> RemoveFlannelResult:
    """Ensures flannel is gone: its DaemonSet first (no flanneld left running without its
    config or rights), then what it used. The list is worked out once and kept in the
    heartbeat, so a retry deletes the same things even though the DaemonSet is gone."""
    plan: list[list[str]] = resumed().get("plan") or _flannel_objects(kube, request)
    heartbeat(plan=plan)
    deleted = []
    for what, path in plan:
        try:
            kube.request("DELETE", path)
            deleted.append(what)
        except ApiException as error:
            if error.status != 404:
                raise
    return RemoveFlannelResult(deleted=deleted)


def _flannel_objects(kube: Kube, request: RemoveFlannelInput) -> list[list[str]]:
    """[description, API path] of everything flannel installed, DaemonSet first."""
    ns = request.namespace
    ds_path = f"/apis/apps/v1/namespaces/{ns}/daemonsets/{request.daemonset}"
    ds = kube.get_or_none(ds_path) or {}
    pod = ds.get("spec", {}).get("template", {}).get("spec", {})
    config_maps = sorted({v["configMap"]["name"] for v in pod.get("volumes") or []
                          if "configMap" in v}) or ["kube-flannel-cfg"]
    account = pod.get("serviceAccountName") or "flannel"
    # Cluster-wide rights granted to flannel's account alone go with it.
    bindings = kube.get(f"{RBAC}/clusterrolebindings")["items"]
    ours = [b for b in bindings if b.get("subjects") and all(
        s.get("kind") == "ServiceAccount" and s.get("name") == account
        and s.get("namespace") == ns for s in b["subjects"])]
    shared = {b["roleRef"]["name"] for b in bindings if b not in ours}
    roles = sorted({b["roleRef"]["name"] for b in ours if b["roleRef"]["kind"] == "ClusterRole"}
                   - shared)
    return [
        [f"DaemonSet {ns}/{request.daemonset}", ds_path],
        *([f"ConfigMap {ns}/{name}", f"/api/v1/namespaces/{ns}/configmaps/{name}"]
          for name in config_maps),
        *([f"ClusterRoleBinding {b['metadata']['name']}",
           f"{RBAC}/clusterrolebindings/{b['metadata']['name']}"] for b in ours),
        *([f"ClusterRole {name}", f"{RBAC}/clusterroles/{name}"] for name in roles),
        [f"ServiceAccount {ns}/{account}", f"/api/v1/namespaces/{ns}/serviceaccounts/{account}"],
        *([[f"Namespace {ns}", f"/api/v1/namespaces/{ns}"]] if ns == "kube-flannel" else []),
    ]
