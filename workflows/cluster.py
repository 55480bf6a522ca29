"""ClusterMigration: one cluster from flannel to Cilium, the whole procedure.

`run` reads top to bottom like ../shared/docs/procedure.md: discover, preflight, plan, install
Cilium beside flannel, apply the per-node override, migrate the nodes wave by wave (one
NodeMigration child per node), finalize, remove flannel. The operator steers it with Updates
(approve, pause, resume, decide) and watches it with the `progress` query; aborting is
cancelling the workflow, which uncordons every node this run cordoned.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError, ChildWorkflowError, is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from plan.facts import ClusterFacts
    from plan.findings import Finding
    from plan.helm_values import final_values, initial_values, values_diff
    from plan.preflight import run_preflight
    from plan.rules.values import NODE_CONFIG_V2
    from plan.spec import CiliumSpec, MigrationSpec
    from plan.steps import (
        Activity,
        ChartRef,
        CiliumStatus,
        CiliumWaitInput,
        ClusterRef,
        HealthInput,
        HealthReport,
        HelmInput,
        HelmResult,
        NodeConfigInput,
        RecycleInput,
        RecycleResult,
        RemoveFlannelInput,
        RemoveFlannelResult,
        RolloutRestartInput,
    )
    from plan.waves import Wave, excluded_nodes, plan_waves
    from workflows import gates as gate_names
    from workflows.gates import GateError, Gates, planned_gates
    from workflows.messages import (
        ApproveRequest,
        DecideRequest,
        MigrationInput,
        NodeEvent,
        NodeMigrationInput,
        PauseRequest,
    )
    from workflows.node import DECIDE_SIGNAL, NODE_EVENT_SIGNAL, NodeMigrationWorkflow
    from workflows.progress import (
        NodeProgress,
        NodeState,
        NodeStep,
        Phase,
        Progress,
        WaveProgress,
    )
    from workflows.steps import describe_failure, run_step

CLUSTER_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigrateCluster")
PHASE_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigratePhase")

# The per-node override of the procedure's Phase 2.
NODE_CONFIG_DEFAULTS = {
    "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
    "custom-cni-conf": "false",
    "cni-chaining-mode": "none",
    "cni-exclusive": "true",
}
INSTALL_TIMEOUT = 900.0
# Our own metrics, served with the SDK's by the worker's Prometheus endpoint. The workflow's
# meter records nothing during replay and adds no history events.
NODES_FINISHED_METRIC = "cilium_migrate_nodes_finished"
GATE_WAIT_METRIC = "cilium_migrate_gate_wait_seconds"


def workflow_id(cluster: str) -> str:
    """One running migration per cluster: the ID is also the lock."""
    return f"cilium-migrate/{cluster}"


@workflow.defn(name="ClusterMigration")
class ClusterMigrationWorkflow:
    @workflow.init
    def __init__(self, input: MigrationInput) -> None:
        self.spec: MigrationSpec = input.spec
        self.progress = Progress(cluster=input.spec.cluster.name)
        self.gates = Gates(input.spec.approvals)
        self.children: dict[str, workflow.ChildWorkflowHandle[NodeMigrationWorkflow,
                                                              NodeProgress]] = {}

    # ---- the procedure --------------------------------------------------------------------

    @workflow.run
    async def run(self, input: MigrationInput) -> Progress:
        self.progress.started_at = workflow.now()
        try:
            facts = await self._discover()
            waves = self._preflight_and_plan(facts)
            await self._gate(gate_names.PREFLIGHT_GATE)
            await self._gate(gate_names.INSTALL_GATE)
            await self._install_cilium(facts)
            await self._apply_node_config()
            await self._migrate_nodes(waves, facts)
            await self._gate(gate_names.FINALIZE_GATE)
            await self._finalize(facts)
            await self._gate(gate_names.REMOVE_FLANNEL_GATE)
            await self._remove_flannel(facts)
        except (asyncio.CancelledError, ChildWorkflowError, ApplicationError) as error:
            cancelled = isinstance(error, asyncio.CancelledError) or is_cancelled_exception(error)
            self.progress.error = "aborted by the operator" if cancelled else str(error)
            self.progress.finished_at = workflow.now()
            self._set_phase(Phase.CANCELLED if cancelled else Phase.FAILED)
            raise
        self.progress.finished_at = workflow.now()
        self._set_phase(Phase.COMPLETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress

    async def _discover(self) -> ClusterFacts:
        self._set_phase(Phase.DISCOVERING)
        return await run_step(Activity.DISCOVER, self._cluster(), ClusterFacts,
                              timeout=timedelta(minutes=2))

    def _preflight_and_plan(self, facts: ClusterFacts) -> list[Wave]:
        self._set_phase(Phase.PREFLIGHT)
        findings = run_preflight(self.spec, facts)
        self.progress.findings = findings
        blocking = [f for f in findings if f.severity == "blocking"]
        if blocking:
            raise ApplicationError(
                "preflight found blocking problems: " + "; ".join(_line(f) for f in blocking),
                [f.model_dump() for f in blocking], type="PreflightBlocked", non_retryable=True)
        waves = plan_waves(self.spec, facts)
        self.progress.excluded_nodes = excluded_nodes(self.spec, facts)
        self.progress.waves = [WaveProgress(index=w.index, kind=w.kind, nodes=w.nodes,
                                            zone=w.zone) for w in waves]
        self.progress.nodes = {n: NodeProgress(name=n, wave=w.index)
                               for w in waves for n in w.nodes}
        warnings = any(f.severity == "warning" and not f.acknowledged for f in findings)
        self.gates.plan(planned_gates(self.spec.approvals.policy, waves, warnings))
        return waves

    async def _install_cilium(self, facts: ClusterFacts) -> None:
        self._set_phase(Phase.INSTALLING)
        await self._helm(initial_values(self.spec, facts))
        await run_step(Activity.WAIT_FOR_CILIUM, CiliumWaitInput(
            cluster=self._cluster(), namespace=self.spec.cilium.namespace,
            timeout_seconds=INSTALL_TIMEOUT), CiliumStatus,
            timeout=timedelta(seconds=INSTALL_TIMEOUT), long=True)

    async def _apply_node_config(self) -> None:
        self._set_phase(Phase.CONFIGURING)
        await run_step(Activity.APPLY_NODE_CONFIG, NodeConfigInput(
            cluster=self._cluster(), namespace=self.spec.cilium.namespace,
            api_version=_node_config_api(self.spec.cilium),
            defaults=NODE_CONFIG_DEFAULTS), type(None))

    async def _migrate_nodes(self, waves: list[Wave], facts: ClusterFacts) -> None:
        self._set_phase(Phase.MIGRATING)
        for index, wave in enumerate(waves):
            await self._wait_until_clear()
            if index == 0:
                await self._gate(gate_names.ROLLOUT_GATE)
            await self._gate(gate_names.wave_gate(wave))
            progress = self.progress.waves[index]
            progress.state = "running"
            await asyncio.gather(*(self._migrate_node(node, wave, facts) for node in wave.nodes))
            health = await run_step(Activity.CHECK_HEALTH, self._health_input(facts),
                                    HealthReport)
            if health.problems and not self.progress.halted:
                self.progress.halted = (f"health check after wave {wave.index}: "
                                        + "; ".join(health.problems))
            progress.state = "halted" if self.progress.halted else "done"
        await self._wait_until_clear()

    async def _migrate_node(self, node: str, wave: Wave, facts: ClusterFacts) -> None:
        await self._gate(gate_names.node_gate(node))
        await workflow.wait_condition(lambda: not self.progress.paused)
        record = self.progress.nodes[node]
        record.state, record.started_at = NodeState.RUNNING, workflow.now()
        handle = await workflow.start_child_workflow(
            NodeMigrationWorkflow.run, self._node_input(node, wave, facts),
            id=f"{workflow.info().workflow_id}/node/{node}",
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        self.children[node] = handle
        try:
            result = await handle
        except ChildWorkflowError as error:
            if is_cancelled_exception(error):
                record.state, record.finished_at = NodeState.CANCELLED, workflow.now()
                _count_node_finished(NodeState.CANCELLED)
                raise
            record.state, record.error = NodeState.FAILED, describe_failure(error)
            _count_node_finished(NodeState.FAILED)
            self.progress.halted = f"node {node} failed: {record.error}"
            return
        self.progress.nodes[node] = result
        _count_node_finished(result.state)
        if result.state is not NodeState.MIGRATED:
            self.progress.halted = (f"node {node} was {result.state.value}; resume to go on "
                                    "with the next wave")

    async def _finalize(self, facts: ClusterFacts) -> None:
        """Phase 4: every node runs Cilium; hand the cluster over to Cilium alone."""
        self._set_phase(Phase.FINALIZING)
        pools = [str(c) for c in self.spec.network.pod_cidrs]
        await run_step(Activity.RECYCLE_PODS, RecycleInput(
            cluster=self._cluster(), cilium_pools=pools, timeout_seconds=600.0),
            RecycleResult, timeout=timedelta(minutes=10), long=True)
        initial, final = initial_values(self.spec, facts), final_values(self.spec, facts)
        self.progress.values_diff = values_diff(initial, final)
        await self._helm(final)
        await run_step(Activity.ROLLOUT_RESTART, RolloutRestartInput(
            cluster=self._cluster(), namespace=self.spec.cilium.namespace,
            timeout_seconds=INSTALL_TIMEOUT,
            restarted_at=workflow.now().isoformat()),
            type(None), timeout=timedelta(seconds=INSTALL_TIMEOUT), long=True)
        await run_step(Activity.DELETE_NODE_CONFIG, NodeConfigInput(
            cluster=self._cluster(), namespace=self.spec.cilium.namespace,
            api_version=_node_config_api(self.spec.cilium), defaults={}), type(None))

    async def _remove_flannel(self, facts: ClusterFacts) -> None:
        if not self.spec.finalize.remove_flannel or facts.flannel is None:
            return
        self._set_phase(Phase.REMOVING_FLANNEL)
        await run_step(Activity.REMOVE_FLANNEL, RemoveFlannelInput(
            cluster=self._cluster(), namespace=facts.flannel.namespace,
            daemonset=facts.flannel.daemonset), RemoveFlannelResult,
            timeout=timedelta(minutes=5))

    # ---- operator messages ----------------------------------------------------------------

    @workflow.update(name="approve")
    def approve(self, request: ApproveRequest) -> str:
        approval = self.gates.approve(request.gate, request.approver, request.reason,
                                      workflow.now())
        self.progress.approvals.append(approval)
        self.progress.pending_gates = list(self.gates.pending)
        return f"gate {request.gate} approved by {request.approver}"

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        try:
            self.gates.check(request.gate, request.approver)
        except GateError as error:
            raise ValueError(str(error)) from None

    @workflow.update(name="pause")
    def pause(self, request: PauseRequest) -> str:
        self.progress.paused = True
        return "paused: running nodes finish their migration, no new node starts"

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        if self.progress.paused:
            raise ValueError("the migration is already paused")
        if self._finished():
            raise ValueError(f"the migration is {self.progress.phase.value}")

    @workflow.update(name="resume")
    def resume(self, request: PauseRequest) -> str:
        self.progress.paused = False
        self.progress.halted = None
        return "resumed"

    @resume.validator
    def _validate_resume(self, request: PauseRequest) -> None:
        if not self.progress.paused and not self.progress.halted:
            raise ValueError("the migration is neither paused nor halted")

    @workflow.update(name="decide")
    async def decide(self, request: DecideRequest) -> str:
        await self.children[request.node].signal(DECIDE_SIGNAL, request)
        node = self.progress.nodes[request.node]
        node.state, node.blocker = NodeState.RUNNING, None
        return f"node {request.node}: {request.decision.value}"

    @decide.validator
    def _validate_decide(self, request: DecideRequest) -> None:
        node = self.progress.nodes.get(request.node)
        if node is None:
            raise ValueError(f"no node {request.node!r} in this migration")
        if node.state is not NodeState.BLOCKED or request.node not in self.children:
            raise ValueError(f"node {request.node} is {node.state.value}, not waiting for a "
                             "decision")

    @workflow.signal(name=NODE_EVENT_SIGNAL)
    def node_event(self, event: NodeEvent) -> None:
        node = self.progress.nodes.get(event.node)
        if node is None:
            return
        node.state = NodeState(event.state)
        node.step = NodeStep(event.step) if event.step else None
        node.blocker, node.blockers, node.verify = event.blocker, event.blockers, event.verify
        node.boot_id_before = event.boot_id_before or node.boot_id_before
        node.boot_id_after = event.boot_id_after or node.boot_id_after
        if event.cordoned_by_us is not None:
            node.cordoned_by_us = event.cordoned_by_us

    @workflow.query(name="progress")
    def get_progress(self) -> Progress:
        return self.progress

    # ---- helpers ---------------------------------------------------------------------------

    async def _gate(self, gate: str) -> None:
        if self.gates.open(gate):
            self.progress.pending_gates = list(self.gates.pending)
            opened = workflow.now()
            await workflow.wait_condition(lambda: gate in self.gates.approved)
            _record_gate_wait(gate, (workflow.now() - opened).total_seconds())

    async def _wait_until_clear(self) -> None:
        await workflow.wait_condition(
            lambda: not self.progress.paused and not self.progress.halted)

    async def _helm(self, values: dict[str, object]) -> None:
        chart = self.spec.cilium.chart
        await run_step(Activity.HELM_UPGRADE, HelmInput(
            cluster=self._cluster(), namespace=self.spec.cilium.namespace,
            chart=ChartRef(repo=chart.repo, name=chart.name, path=chart.path,
                           version=None if chart.path else self.spec.cilium.version),
            values=values, timeout_seconds=INSTALL_TIMEOUT),
            HelmResult, timeout=timedelta(seconds=INSTALL_TIMEOUT), long=True)

    def _set_phase(self, phase: Phase) -> None:
        if self.progress.phase is not phase:
            self.progress.phase = phase
            workflow.upsert_search_attributes([PHASE_ATTRIBUTE.value_set(phase.value)])

    def _finished(self) -> bool:
        return self.progress.phase in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)

    def _cluster(self) -> ClusterRef:
        cluster = self.spec.cluster
        return ClusterRef(name=cluster.name, context=cluster.kubeconfig_context,
                          in_cluster=cluster.in_cluster)

    def _health_input(self, facts: ClusterFacts) -> HealthInput:
        return HealthInput(
            cluster=self._cluster(), cilium_namespace=self.spec.cilium.namespace,
            cilium_pools=[str(c) for c in self.spec.network.pod_cidrs],
            flannel_namespace=facts.flannel.namespace if facts.flannel else None,
            flannel_daemonset=facts.flannel.daemonset if facts.flannel else None)

    def _node_input(self, node: str, wave: Wave, facts: ClusterFacts) -> NodeMigrationInput:
        spec = self.spec
        return NodeMigrationInput(
            cluster=self._cluster(), node=node, wave=wave.index,
            run_id=workflow.info().workflow_id, parent_id=workflow.info().workflow_id,
            cilium_namespace=spec.cilium.namespace,
            cilium_pools=[str(c) for c in spec.network.pod_cidrs],
            flannel_network=str(facts.flannel.network) if facts.flannel else None,
            drain_timeout_seconds=spec.drain.timeout.total_seconds(),
            drain_grace_period_seconds=spec.drain.grace_period_seconds,
            drain_delete_empty_dir_data=spec.drain.delete_empty_dir_data,
            drain_force_on_timeout=spec.drain.on_timeout == "force",
            reboot_strategy=spec.reboot.strategy, reboot_image=spec.reboot.image,
            reboot_command=spec.reboot.command,
            reboot_timeout_seconds=spec.reboot.timeout.total_seconds(),
            verify_image=spec.verify.probe_image, verify_checks=list(spec.verify.checks),
            verify_timeout_seconds=spec.verify.timeout.total_seconds(),
        )


def _count_node_finished(state: NodeState) -> None:
    workflow.metric_meter().create_counter(
        NODES_FINISHED_METRIC, "Nodes whose migration ended, by how it ended",
    ).add(1, {"state": state.value})


def _record_gate_wait(gate: str, seconds: float) -> None:
    """``gate``'s kind (install, wave, node, finalize, ...) keeps the label's values few."""
    kind = "wave" if gate.startswith("wave-") else gate.split("/", 1)[0]
    workflow.metric_meter().create_histogram_float(
        GATE_WAIT_METRIC, "Time from a gate's opening to its approval", "s",
    ).record(seconds, {"gate": kind})


def _line(finding: Finding) -> str:
    return f"[{finding.id}] {finding.message}"


def _node_config_api(cilium: CiliumSpec) -> str:
    """CiliumNodeConfig moved to cilium.io/v2 in Cilium 1.16; v2alpha1 before that."""
    return "cilium.io/v2" if cilium.version_tuple >= NODE_CONFIG_V2 else "cilium.io/v2alpha1"
