"""The cluster's health between waves: nodes Ready, switched nodes running a Ready agent, both
overlays' DaemonSets rolled out, and how many workload pods are already on Cilium.

It reports; the workflow decides whether the problems found stop the next wave.
"""

from __future__ import annotations

from activities.agent import AGENT_DAEMONSET, AGENT_SELECTOR
from activities.kubeapi import Kube, condition_true, is_terminating, pod_ready
from activities.pod_addresses import range_of, running_pods
from activities.rollout import daemonset_progress, daemonset_rolled_out
from plan.contract import HealthInput, HealthReport
from plan.facts import MIGRATION_LABEL


def check_health(kube: Kube, request: HealthInput) -> HealthReport:
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
    elif not daemonset_rolled_out(agent_set):
        problems.append(f"Cilium agents: {daemonset_progress(agent_set)}")
    flannel_ready = False
    if request.flannel_namespace and request.flannel_daemonset:
        flannel = kube.get_or_none(f"/apis/apps/v1/namespaces/{request.flannel_namespace}"
                                   f"/daemonsets/{request.flannel_daemonset}")
        flannel_ready = flannel is not None and daemonset_rolled_out(flannel)
        if flannel is None:
            problems.append(f"flannel DaemonSet {request.flannel_namespace}/"
                            f"{request.flannel_daemonset} not found")
        elif not flannel_ready:
            problems.append(f"flannel: {daemonset_progress(flannel)}")
    workloads = [p for p in running_pods(kube, None) if not is_terminating(p)]
    return HealthReport(
        nodes_on_cilium=nodes_on_cilium,
        pods_on_cilium=sum(range_of(p["status"]["podIP"], request.cilium_pools) is not None
                           for p in workloads),
        pods_total=len(workloads), flannel_ready=flannel_ready, problems=problems)
