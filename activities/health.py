"""The cluster's health between waves: nodes Ready, switched nodes running a Ready agent, both
overlays' DaemonSets rolled out, and how many workload pods are already on Cilium.

The check runs right after a wave, when the wave's nodes have just rebooted: their flannel and
Cilium pods are restarting, and the DaemonSet controller's counts (numberReady) follow some time
later. One look would halt the migration on a state that mends itself in seconds, so the check
waits, on watches, until one look finds nothing wrong or the deadline passes, and then reports
only what had not converged.

It reports; the workflow decides whether the problems found stop the next wave.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from activities.agent import AGENT_DAEMONSET, AGENT_SELECTOR, agent_pods_path, agent_query
from activities.context import heartbeat
from activities.kubeapi import Kube, Obj, condition_true, is_terminating, pod_ready
from activities.pod_addresses import range_of, running_pods
from activities.rollout import daemonset_progress, daemonset_rolled_out
from plan.contract import HealthInput, HealthReport
from plan.facts import MIGRATION_LABEL


@dataclass(frozen=True)
class Concern:
    """One thing found wrong, and the watch that says when it has mended."""

    problem: str  # for the operator
    collection: str
    query: dict[str, str]
    mended: Callable[[list[Obj]], bool]  # on the collection's current objects


@dataclass
class Look:
    """One look at the cluster."""

    concerns: list[Concern] = field(default_factory=list)
    nodes_on_cilium: int = 0
    flannel_ready: bool = False


def check_health(kube: Kube, request: HealthInput) -> HealthReport:
    deadline = time.monotonic() + request.timeout_seconds
    look = _look(kube, request)
    while look.concerns and (left := deadline - time.monotonic()) > 0:
        first, problems = look.concerns[0], [c.problem for c in look.concerns]
        mended = kube.wait(first.collection, first.mended, left,
                           on_tick=partial(heartbeat, problems=problems), **first.query)
        look = _look(kube, request)  # what else mended meanwhile, or broke again
        if not mended:
            break  # the deadline passed: this last look is the report
    pods_on_cilium = pods_total = 0
    for pod in running_pods(kube, None):  # counted as the pages come, never all held at once
        if not is_terminating(pod):
            pods_total += 1
            pods_on_cilium += range_of(pod["status"]["podIP"], request.cilium_pools) is not None
    return HealthReport(
        nodes_on_cilium=look.nodes_on_cilium, pods_on_cilium=pods_on_cilium,
        pods_total=pods_total, flannel_ready=look.flannel_ready,
        problems=[c.problem for c in look.concerns])


def _look(kube: Kube, request: HealthInput) -> Look:
    look = Look()
    agents = kube.get(agent_pods_path(request.cilium_namespace),
                      labelSelector=AGENT_SELECTOR)["items"]
    ready_agents = {p["spec"].get("nodeName") for p in agents if pod_ready(p)}
    for node in kube.get("/api/v1/nodes")["items"]:
        name = node["metadata"]["name"]
        if not condition_true(node, "Ready"):
            look.concerns.append(Concern(
                f"node {name} is not Ready", "/api/v1/nodes",
                {"fieldSelector": f"metadata.name={name}"},
                lambda nodes: any(condition_true(n, "Ready") for n in nodes)))
        if (node["metadata"].get("labels") or {}).get(MIGRATION_LABEL) == "true":
            if name in ready_agents:
                look.nodes_on_cilium += 1
            else:
                look.concerns.append(Concern(
                    f"node {name} is switched to Cilium but its agent is not Ready",
                    agent_pods_path(request.cilium_namespace), agent_query(name),
                    lambda pods: any(pod_ready(p) for p in pods)))
    agent_set = _daemonset(kube, request.cilium_namespace, AGENT_DAEMONSET, "Cilium agents")
    if agent_set is not None:
        look.concerns.append(agent_set)
    if request.flannel_namespace and request.flannel_daemonset:
        flannel = _daemonset(kube, request.flannel_namespace, request.flannel_daemonset,
                             "flannel")
        look.flannel_ready = flannel is None
        if flannel is not None:
            look.concerns.append(flannel)
    return look


def _daemonset(kube: Kube, namespace: str, name: str, what: str) -> Concern | None:
    """None when the DaemonSet has rolled out; else what is wrong with it."""
    collection = f"/apis/apps/v1/namespaces/{namespace}/daemonsets"
    found = kube.get_or_none(f"{collection}/{name}")
    if found is not None and daemonset_rolled_out(found):
        return None
    problem = (f"{what}: {daemonset_progress(found)}" if found is not None
               else f"{what} DaemonSet {namespace}/{name} not found")

    def mended(items: list[Obj]) -> bool:
        return any(daemonset_rolled_out(item) for item in items)

    return Concern(problem, collection, {"fieldSelector": f"metadata.name={name}"}, mended)
