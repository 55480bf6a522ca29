"""The Cilium agents and operator: how to find them, waiting for Cilium to be ready, and
re-creating one node's agent so it reads that node's configuration.

The agent's DaemonSet name and pod selector are the chart's; every step that looks for an agent
(restart, reboot, health) finds it through this module.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from temporalio.exceptions import ApplicationError

from activities.context import get_node, heartbeat, record_node_event, step_error
from activities.kubeapi import Kube, Obj, condition_since, created_at, is_terminating, pod_ready
from activities.rollout import (
    NOT_READY_YET,
    daemonset_rolled_out,
    deployment_rolled_out,
    wait_rolled_out,
)
from plan.contract import AgentStatus, CiliumStatus, CiliumWaitInput, RestartAgentInput, StepError

AGENT_DAEMONSET = "cilium"
AGENT_SELECTOR = "k8s-app=cilium"
OPERATOR_DEPLOYMENT = "cilium-operator"


def agent_pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def agent_query(node: str) -> dict[str, str]:
    """The list/watch query for the agent pods on ``node``."""
    return {"labelSelector": AGENT_SELECTOR, "fieldSelector": f"spec.nodeName={node}"}


def wait_for_cilium(kube: Kube, request: CiliumWaitInput) -> CiliumStatus:
    deadline = time.monotonic() + request.timeout_seconds
    ns = request.namespace
    agents = wait_rolled_out(kube, f"/apis/apps/v1/namespaces/{ns}/daemonsets",
                             AGENT_DAEMONSET, daemonset_rolled_out, request.timeout_seconds)
    operator = wait_rolled_out(kube, f"/apis/apps/v1/namespaces/{ns}/deployments",
                               OPERATOR_DEPLOYMENT, deployment_rolled_out,
                               deadline - time.monotonic())
    status = agents.get("status", {})
    result = CiliumStatus(agents_desired=status.get("desiredNumberScheduled", 0),
                          agents_ready=status.get("numberReady", 0),
                          operator_ready=deployment_rolled_out(operator))
    if not daemonset_rolled_out(agents) or not result.operator_ready:
        raise ApplicationError(
            f"Cilium is not ready after {request.timeout_seconds:.0f}s: agents "
            f"{result.agents_ready}/{result.agents_desired} ready, operator "
            f"{'ready' if result.operator_ready else 'not ready'}", result.model_dump(),
            type=NOT_READY_YET)
    return result


def restart_agent(kube: Kube, request: RestartAgentInput) -> AgentStatus:
    """Re-creates the node's agent so it reads the node's overrides, unless an agent that
    started at or after ``not_before`` (this step, earlier attempt) is already there.

    The node's agent pods are listed once and followed on a watch until the new one is Ready.
    A restart that went through records no event (the reboot that follows does); one that
    fails records a Warning."""
    node = request.target.node
    pods = agent_pods_path(request.namespace)
    not_before = _whole_seconds(request.not_before)
    agents = kube.follow(pods, agent_query(node))
    if not agents.objects:
        get_node(kube, node)  # no agent at all: is the node still there?
    live = [p for p in agents.objects if not is_terminating(p)]
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

    agent = agents.wait(new_and_ready, request.timeout_seconds,
                        on_tick=lambda: heartbeat(replaced=sorted(replaced)))
    if agent is None:
        get_node(kube, node)  # a node that went away is told apart from a slow agent
        current = [p for p in agents.objects if not is_terminating(p)]
        state = (", ".join(f"{p['metadata']['name']} {p['status'].get('phase', 'Pending')}, "
                           "not Ready" for p in current) or "no agent pod scheduled")
        message = (f"the Cilium agent on {node} is not Ready after "
                   f"{request.timeout_seconds:.0f}s: {state}")
        record_node_event(kube, node, "CiliumMigrateAgentNotReady", message, type="Warning")
        raise step_error(StepError.AGENT_NOT_READY, message)
    return AgentStatus(pod=agent["metadata"]["name"], ready=True, created_at=created_at(agent),
                       ready_at=condition_since(agent, "Ready"))


def _whole_seconds(instant: datetime) -> datetime:
    """In UTC, truncated: creationTimestamp has whole seconds, so compare at that precision."""
    aware = instant.astimezone(UTC) if instant.tzinfo else instant.replace(tzinfo=UTC)
    return aware.replace(microsecond=0)
