"""Cilium-side steps: install or upgrade it with Helm, wait for it, switch nodes over with the
CiliumNodeConfig and agent restarts, and the finalize steps (recycle leftover pods, roll the
agents, remove flannel), plus the cluster health check between waves.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC

from kubernetes.client.rest import ApiException
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context import get_node, heartbeat, record_node_event, resumed, step_error
from activities.drain import RETRY_SECONDS, evict, none_of
from activities.kubeapi import (
    APPLY,
    Kube,
    Obj,
    condition_true,
    controller_of,
    created_at,
    is_terminating,
    object_key,
    pod_ready,
)
from plan.facts import MIGRATION_LABEL
from plan.steps import (
    AgentStatus,
    CiliumStatus,
    CiliumWaitInput,
    DrainBlocker,
    HealthInput,
    HealthReport,
    HelmInput,
    HelmResult,
    NodeConfigInput,
    RecycleInput,
    RecycleResult,
    RemoveFlannelInput,
    RemoveFlannelResult,
    RestartAgentInput,
    RolloutRestartInput,
    StepError,
)

AGENT_DAEMONSET = "cilium"
AGENT_SELECTOR = "k8s-app=cilium"
OPERATOR_DEPLOYMENT = "cilium-operator"
FIELD_MANAGER = "cilium-migrate"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Waits that may simply need more time fail with this retryable type.
NOT_READY_YET = "NotReadyYet"
HEARTBEAT_SECONDS = 5.0
RBAC = "/apis/rbac.authorization.k8s.io/v1"


# ---- Helm ---------------------------------------------------------------------------------

def helm_upgrade(helm: str, kubeconfig: str | None, request: HelmInput) -> HelmResult:
    """`helm upgrade --install` with the values in a temporary file (they hold no secrets)."""
    flags = ["-n", request.namespace]
    if kubeconfig:
        flags += ["--kubeconfig", kubeconfig]
    if request.cluster.context:
        flags += ["--kube-context", request.cluster.context]
    chart = request.chart
    with tempfile.NamedTemporaryFile("w", prefix="cilium-values-", suffix=".json") as values:
        json.dump(request.values, values)
        values.flush()
        argv = [helm, "upgrade", "--install", request.release, chart.path or chart.name,
                *flags, "--create-namespace", "--values", values.name,
                "--wait", "--timeout", f"{int(request.timeout_seconds)}s"]
        if chart.version:
            argv += ["--version", chart.version]
        if chart.repo and not chart.path:
            argv += ["--repo", chart.repo]
        _run_helm(argv, request.timeout_seconds + 60)
    status = json.loads(_run_helm([helm, "status", request.release, *flags, "-o", "json"], 60))
    return HelmResult(revision=int(status["version"]))


def _run_helm(argv: list[str], timeout: float) -> str:
    """Runs helm, heartbeating while it works; its stderr is the error (schema errors too)."""
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    except OSError as error:
        raise step_error(StepError.HELM_FAILED, f"cannot run {argv[0]}: {error}") from error
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = process.communicate(timeout=HEARTBEAT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                raise step_error(StepError.HELM_FAILED,
                                 f"helm {argv[1]} did not finish within {timeout:.0f}s") from None
            heartbeat(helm=argv[1])
        except BaseException:  # cancelled: do not leave helm running behind us
            process.kill()
            raise
    if process.returncode != 0:
        raise step_error(StepError.HELM_FAILED,
                         f"helm {argv[1]} failed: {err.strip() or out.strip()}")
    return out


# ---- waiting for Cilium -------------------------------------------------------------------

def wait_for_cilium(kube: Kube, request: CiliumWaitInput) -> CiliumStatus:
    deadline = time.monotonic() + request.timeout_seconds
    ns = request.namespace
    agents = _wait_rolled_out(kube, f"/apis/apps/v1/namespaces/{ns}/daemonsets",
                              AGENT_DAEMONSET, _daemonset_done, request.timeout_seconds)
    operator = _wait_rolled_out(kube, f"/apis/apps/v1/namespaces/{ns}/deployments",
                                OPERATOR_DEPLOYMENT, _deployment_done,
                                deadline - time.monotonic())
    status = agents.get("status", {})
    result = CiliumStatus(agents_desired=status.get("desiredNumberScheduled", 0),
                          agents_ready=status.get("numberReady", 0),
                          operator_ready=_deployment_done(operator))
    if not _daemonset_done(agents) or not result.operator_ready:
        raise ApplicationError(
            f"Cilium is not ready after {request.timeout_seconds:.0f}s: agents "
            f"{result.agents_ready}/{result.agents_desired} ready, operator "
            f"{'ready' if result.operator_ready else 'not ready'}", result.model_dump(),
            type=NOT_READY_YET)
    return result


def _wait_rolled_out(kube: Kube, collection: str, name: str, done: Callable[[Obj], bool],
                     timeout: float) -> Obj:
    """Waits for ``done(object)``; returns the object as last seen ({} when missing)."""
    seen: Obj = {}

    def check(items: list[Obj]) -> bool:
        nonlocal seen
        seen = items[0] if items else {}
        return bool(items) and done(seen)

    kube.wait(collection, check, max(timeout, 0), on_tick=lambda: heartbeat(waiting_for=name),
              fieldSelector=f"metadata.name={name}")
    return seen


def _daemonset_done(ds: Obj) -> bool:
    if not ds:
        return False
    status, desired = ds.get("status", {}), ds.get("status", {}).get("desiredNumberScheduled", 0)
    return (status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
            and status.get("updatedNumberScheduled", 0) == desired
            and status.get("numberReady", 0) == desired
            and status.get("numberAvailable", 0) == desired)


def _deployment_done(deployment: Obj) -> bool:
    if not deployment:
        return False
    status, wanted = deployment.get("status", {}), deployment["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == wanted
            and status.get("availableReplicas", 0) >= wanted
            and condition_true(deployment, "Available"))


# ---- per-node switch ----------------------------------------------------------------------

def _node_config_path(request: NodeConfigInput) -> str:
    return (f"/apis/{request.api_version}/namespaces/{request.namespace}"
            f"/ciliumnodeconfigs/{request.name}")


def apply_node_config(kube: Kube, request: NodeConfigInput) -> None:
    """Server-side apply: creates it, or takes over the fields we own, in one idempotent call."""
    body = {"apiVersion": request.api_version, "kind": "CiliumNodeConfig",
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": {"nodeSelector": {"matchLabels": {request.label: "true"}},
                     "defaults": request.defaults}}
    kube.request("PATCH", _node_config_path(request), body, content_type=APPLY,
                 query={"fieldManager": FIELD_MANAGER, "force": "true"})


def delete_node_config(kube: Kube, request: NodeConfigInput) -> None:
    kube.delete(_node_config_path(request))


def restart_agent(kube: Kube, request: RestartAgentInput) -> AgentStatus:
    """Re-creates the node's agent so it reads the node's overrides, unless an agent that
    started at or after ``not_before`` (this step, earlier attempt) is already there."""
    node = request.target.node
    get_node(kube, node)
    pods = f"/api/v1/namespaces/{request.namespace}/pods"
    query = {"labelSelector": AGENT_SELECTOR, "fieldSelector": f"spec.nodeName={node}"}
    # creationTimestamp has whole seconds: compare at that precision.
    not_before = request.not_before.astimezone(UTC) if request.not_before.tzinfo else (
        request.not_before.replace(tzinfo=UTC))
    not_before = not_before.replace(microsecond=0)
    live = [p for p in kube.get(pods, **query)["items"] if not is_terminating(p)]
    replaced: set[str] = set()
    if not any(created_at(p) >= not_before for p in live):
        for pod in live:
            kube.delete(f"{pods}/{pod['metadata']['name']}",
                        {"preconditions": {"uid": pod["metadata"]["uid"]}})
            replaced.add(pod["metadata"]["uid"])
    # After deleting, any other agent is a new one (whatever the clocks say); otherwise only
    # one created since `not_before` is.
    any_other = bool(replaced) or not live

    def new_and_ready(found: list[Obj]) -> Obj | None:
        return next((p for p in found if pod_ready(p) and p["metadata"]["uid"] not in replaced
                     and (any_other or created_at(p) >= not_before)), None)

    agent = kube.wait(pods, new_and_ready, request.timeout_seconds,
                      on_tick=lambda: heartbeat(replaced=sorted(replaced)),
                      labelSelector=AGENT_SELECTOR, fieldSelector=f"spec.nodeName={node}")
    if agent is None:
        current = [p for p in kube.get(pods, **query)["items"] if not is_terminating(p)]
        state = (", ".join(f"{p['metadata']['name']} {p['status'].get('phase', 'Pending')}, "
                           "not Ready" for p in current) or "no agent pod scheduled")
        raise step_error(StepError.AGENT_NOT_READY,
                         f"the Cilium agent on {node} is not Ready after "
                         f"{request.timeout_seconds:.0f}s: {state}")
    record_node_event(kube, node, "CiliumMigrateAgentRestarted",
                      f"Cilium agent {agent['metadata']['name']} is Ready with the node's "
                      f"configuration ({len(replaced)} old agent pod(s) replaced)")
    return AgentStatus(pod=agent["metadata"]["name"], ready=True)


# ---- finalize -----------------------------------------------------------------------------

def rollout_restart(kube: Kube, request: RolloutRestartInput) -> None:
    """Restarts every pod of the DaemonSet once per ``restarted_at`` value, and waits."""
    stamp = request.restarted_at or activity.info().scheduled_time.isoformat()
    path = f"/apis/apps/v1/namespaces/{request.namespace}/daemonsets/{request.daemonset}"
    ds = kube.get_or_none(path)
    if ds is None:
        raise step_error(StepError.CLUSTER_UNHEALTHY,
                         f"DaemonSet {request.namespace}/{request.daemonset} not found")
    template = ds["spec"]["template"]["metadata"].get("annotations") or {}
    if template.get(RESTARTED_AT) != stamp:
        kube.patch(path, {"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: stamp}}}}})
    ds = _wait_rolled_out(kube, f"/apis/apps/v1/namespaces/{request.namespace}/daemonsets",
                          request.daemonset, _daemonset_done, request.timeout_seconds)
    if not _daemonset_done(ds):
        status = ds.get("status", {})
        raise ApplicationError(
            f"rollout of {request.namespace}/{request.daemonset} not done after "
            f"{request.timeout_seconds:.0f}s: {status.get('updatedNumberScheduled', 0)}/"
            f"{status.get('desiredNumberScheduled', 0)} updated, "
            f"{status.get('numberReady', 0)} ready", type=NOT_READY_YET)


def recycle_pods(kube: Kube, request: RecycleInput) -> RecycleResult:
    """Evicts the controller-owned pods that hold an address outside the Cilium pools when
    the step starts, so their controllers re-create them on Cilium; budgets are honoured until
    the deadline. Each is evicted once: a replacement that lands on a node still on flannel is
    not chased. Pods no controller owns are only reported: nothing would bring them back."""
    pools = _networks(request.cilium_pools)
    leftovers = [p for p in _running_pods(kube, request.namespaces)
                 if not _in(p["status"]["podIP"], pools)]
    unmanaged = sorted(object_key(p) for p in leftovers if controller_of(p) is None)
    targets = {p["metadata"]["uid"] for p in leftovers if controller_of(p) is not None}
    recycled: dict[str, None] = dict.fromkeys(resumed().get("recycled", []))
    deadline = time.monotonic() + request.timeout_seconds
    while True:
        pending = [p for p in _running_pods(kube, request.namespaces)
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
                StepError.DRAIN_BLOCKED, "recycling pods did not finish: " + "; ".join(
                    f"pod {b.pod}: {b.reason}" for b in blockers),
                [b.model_dump() for b in blockers])
        # Evicted pods leave within their grace period; refused ones are asked again soon.
        namespaces = request.namespaces or []
        kube.wait(f"/api/v1/namespaces/{namespaces[0]}/pods" if len(namespaces) == 1
                  else "/api/v1/pods", none_of({p["metadata"]["uid"] for p in pending}),
                  min(left, RETRY_SECONDS) if refusals else left,
                  on_tick=lambda: heartbeat(recycled=list(recycled)))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(c) for c in cidrs]


def _in(ip: str, networks: list[Network]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in network for network in networks)


def _running_pods(kube: Kube, namespaces: list[str] | None) -> list[Obj]:
    """Running pods on a pod network (not the host's), with an address."""
    paths = (["/api/v1/pods"] if namespaces is None
             else [f"/api/v1/namespaces/{ns}/pods" for ns in namespaces])
    return [p for path in paths
            for p in kube.get(path, fieldSelector="status.phase=Running")["items"]
            if not p["spec"].get("hostNetwork") and p.get("status", {}).get("podIP")]


def check_health(kube: Kube, request: HealthInput) -> HealthReport:
    pools = _networks(request.cilium_pools)
    problems: list[str] = []
    agents = kube.get(f"/api/v1/namespaces/{request.cilium_namespace}/pods",
                      labelSelector=AGENT_SELECTOR)["items"]
    ready_agents = {p["spec"].get("nodeName") for p in agents if pod_ready(p)}
    nodes_on_cilium = 0
    for node in kube.get("/api/v1/nodes")["items"]:
        name = node["metadata"]["name"]
        if not condition_true(node, "Ready"):
            problems.append(f"node {name} is not Ready")
        if (node["metadata"].get("labels") or {}).get(MIGRATION_LABEL) == "true":
            if name in ready_agents:
                nodes_on_cilium += 1
            else:
                problems.append(f"node {name} is switched to Cilium but its agent is not Ready")
    agent_set = kube.get_or_none(f"/apis/apps/v1/namespaces/{request.cilium_namespace}"
                                 f"/daemonsets/{AGENT_DAEMONSET}")
    if agent_set is None:
        problems.append(f"DaemonSet {request.cilium_namespace}/{AGENT_DAEMONSET} not found")
    elif not _daemonset_done(agent_set):
        problems.append(f"Cilium agents: {_ready_count(agent_set)}")
    flannel_ready = False
    if request.flannel_namespace and request.flannel_daemonset:
        flannel = kube.get_or_none(f"/apis/apps/v1/namespaces/{request.flannel_namespace}"
                                   f"/daemonsets/{request.flannel_daemonset}")
        flannel_ready = flannel is not None and _daemonset_done(flannel)
        if flannel is None:
            problems.append(f"flannel DaemonSet {request.flannel_namespace}/"
                            f"{request.flannel_daemonset} not found")
        elif not flannel_ready:
            problems.append(f"flannel: {_ready_count(flannel)}")
    workloads = [p for p in _running_pods(kube, None) if not is_terminating(p)]
    return HealthReport(
        nodes_on_cilium=nodes_on_cilium,
        pods_on_cilium=sum(_in(p["status"]["podIP"], pools) for p in workloads),
        pods_total=len(workloads), flannel_ready=flannel_ready, problems=problems)


def _ready_count(ds: Obj) -> str:
    status = ds.get("status", {})
    return (f"{status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)} ready, "
            f"{status.get('updatedNumberScheduled', 0)} up to date")


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
