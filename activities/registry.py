"""Every activity the workflows call, registered under its `Activity` name.

The methods only resolve the cluster's client and hand over to the module that does the work;
the worker registers `activities(context)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities import (
    agent,
    chart_render,
    connectivity,
    drain,
    echo_mesh,
    finalize,
    health,
    helm,
    host,
    node_config,
    nodes,
    verify,
)
from activities.context import ActivityContext, resumed
from activities.discovery import discover_cluster
from activities.helm_release import operation_of
from activities.reboot.step import reboot_node
from activities.reboot.strategies import strategies
from plan.contract import (
    Activity,
    AgentStatus,
    ChartRender,
    ChartRenderInput,
    CiliumStatus,
    CiliumWaitInput,
    ClusterRef,
    ConnectivityFigures,
    CordonResult,
    DrainInput,
    DrainResult,
    EchoMeshInput,
    EchoMeshRemoval,
    EchoMeshStatus,
    HealthInput,
    HealthReport,
    HelmInput,
    HelmResult,
    HostCommandInput,
    LabelInput,
    MonitorInput,
    NodeConfigInput,
    NodeRef,
    NodeSnapshot,
    RebootInput,
    RebootResult,
    RecycleInput,
    RecycleResult,
    RemoveFlannelInput,
    RemoveFlannelResult,
    RestartAgentInput,
    RolloutRestartInput,
    SnapshotInput,
    SwitchedNodes,
    VerifyInput,
    VerifyResult,
)
from plan.facts import ClusterFacts


class MigrationActivities:
    def __init__(self, context: ActivityContext) -> None:
        self.context = context
        self.reboot_strategies = strategies(docker=context.docker)

    # ---- discovery ----------------------------------------------------------------------

    @activity.defn(name=Activity.DISCOVER)
    def discover_cluster(self, cluster: ClusterRef) -> ClusterFacts:
        # Its DiscoveryError is already typed and non-retryable: no translation here.
        return discover_cluster(self.context.kube(cluster), self.context.worker_node)

    # ---- node steps ---------------------------------------------------------------------

    @activity.defn(name=Activity.SNAPSHOT_NODE)
    def snapshot_node(self, request: SnapshotInput) -> NodeSnapshot:
        return nodes.snapshot_node(self.context.kube(request.target.cluster), request,
                                   self.reboot_strategies)

    @activity.defn(name=Activity.CORDON_NODE)
    def cordon_node(self, target: NodeRef) -> CordonResult:
        return nodes.cordon_node(self.context.kube(target.cluster), target)

    @activity.defn(name=Activity.DRAIN_NODE)
    def drain_node(self, request: DrainInput) -> DrainResult:
        return drain.drain_node(self.context.kube(request.target.cluster), request)

    @activity.defn(name=Activity.LABEL_NODE)
    def label_node(self, request: LabelInput) -> None:
        nodes.label_node(self.context.kube(request.target.cluster), request)

    @activity.defn(name=Activity.RESTART_AGENT)
    def restart_agent(self, request: RestartAgentInput) -> AgentStatus:
        return agent.restart_agent(self.context.kube(request.target.cluster), request)

    @activity.defn(name=Activity.REBOOT_NODE)
    def reboot_node(self, request: RebootInput) -> RebootResult:
        return reboot_node(self.context.kube(request.target.cluster), request,
                           self.reboot_strategies)

    @activity.defn(name=Activity.RUN_HOST_COMMAND)
    def run_host_command(self, request: HostCommandInput) -> None:
        host.run_host_command(self.context.kube(request.target.cluster), request)

    @activity.defn(name=Activity.VERIFY_NODE)
    def verify_node(self, request: VerifyInput) -> VerifyResult:
        return verify.verify_node(self.context.kube(request.target.cluster), request)

    @activity.defn(name=Activity.UNCORDON_NODE)
    def uncordon_node(self, target: NodeRef) -> bool:
        return nodes.uncordon_node(self.context.kube(target.cluster), target)

    @activity.defn(name=Activity.LIST_SWITCHED_NODES)
    def list_switched_nodes(self, cluster: ClusterRef) -> SwitchedNodes:
        return nodes.list_switched_nodes(self.context.kube(cluster))

    # ---- cluster steps ------------------------------------------------------------------

    @activity.defn(name=Activity.RENDER_CHART)
    def render_chart(self, request: ChartRenderInput) -> ChartRender:
        return chart_render.render_chart(self.context.helm, request)

    @activity.defn(name=Activity.HELM_UPGRADE)
    def helm_upgrade(self, request: HelmInput) -> HelmResult:
        info = activity.info()
        return helm.helm_upgrade(
            self.context.helm, self.context.kubeconfig(request.cluster),
            self.context.kube(request.cluster), request,
            operation_of(info.workflow_id or "", info.workflow_run_id or "", info.activity_id,
                         info.attempt),
            resumed())

    @activity.defn(name=Activity.WAIT_FOR_CILIUM)
    def wait_for_cilium(self, request: CiliumWaitInput) -> CiliumStatus:
        return agent.wait_for_cilium(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.APPLY_NODE_CONFIG)
    def apply_node_config(self, request: NodeConfigInput) -> None:
        node_config.apply_node_config(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.DELETE_NODE_CONFIG)
    def delete_node_config(self, request: NodeConfigInput) -> None:
        node_config.delete_node_config(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.CHECK_HEALTH)
    def check_health(self, request: HealthInput) -> HealthReport:
        return health.check_health(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.RECYCLE_PODS)
    def recycle_pods(self, request: RecycleInput) -> RecycleResult:
        return finalize.recycle_pods(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.ROLLOUT_RESTART)
    def rollout_restart(self, request: RolloutRestartInput) -> None:
        finalize.rollout_restart(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.DEPLOY_ECHO_MESH)
    def deploy_echo_mesh(self, request: EchoMeshInput) -> EchoMeshStatus:
        return echo_mesh.deploy_echo_mesh(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.REMOVE_ECHO_MESH)
    def remove_echo_mesh(self, request: EchoMeshRemoval) -> bool:
        return echo_mesh.remove_echo_mesh(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.MONITOR_CONNECTIVITY)
    def monitor_connectivity(self, request: MonitorInput) -> ConnectivityFigures:
        return connectivity.monitor_connectivity(self.context.kube(request.cluster), request)

    @activity.defn(name=Activity.REMOVE_FLANNEL)
    def remove_flannel(self, request: RemoveFlannelInput) -> RemoveFlannelResult:
        return finalize.remove_flannel(self.context.kube(request.cluster), request)


def activities(context: ActivityContext) -> list[Callable[..., Any]]:
    """The bound activity methods, ready for `Worker(activities=...)`."""
    instance = MigrationActivities(context)
    return [getattr(instance, name) for name, member in vars(MigrationActivities).items()
            if callable(member) and hasattr(member, "__temporal_activity_definition")]
