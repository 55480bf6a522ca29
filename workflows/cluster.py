"""ClusterMigration: one cluster from flannel to Cilium, the whole procedure.

`run` reads top to bottom like ../shared/docs/procedure.md: discover, preflight, plan, install
Cilium beside flannel, apply the per-node override, migrate the nodes wave by wave (a
WaveMigration child per wave, workflows/wave.py, starts one NodeMigration per node; the nodes of
a wave that each wait for an approval this run starts itself), finalize, remove flannel. The
operator steers it with Updates (approve, pause, resume, decide) and watches it with the
`progress` query; aborting is cancelling the workflow, which uncordons every node this run
cordoned. Between waves a long run continues as new (workflows/continuation.py) and the next
run goes on from the next wave.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    import workflows.gates as gate_names
    from plan.chart_check import ChartVerdict, chart_ref, render_input
    from plan.contract import (
        Activity,
        ChartRender,
        CiliumStatus,
        CiliumWaitInput,
        ConnectivityFigures,
        EchoMeshInput,
        EchoMeshRemoval,
        EchoMeshStatus,
        HealthInput,
        HealthReport,
        HelmInput,
        HelmResult,
        MonitorInput,
        RecycleInput,
        RecycleResult,
        RemoveFlannelInput,
        RemoveFlannelResult,
        RolloutRestartInput,
        SwitchedNodes,
    )
    from plan.facts import ClusterFacts, FlannelFacts
    from plan.findings import Finding, blocking, unacknowledged
    from plan.node_config import node_config
    from plan.planner import MigrationPlan, make_plan
    from plan.policies import (
        ClusterRef,
        ConnectivityPolicy,
        NodePolicies,
        cluster_ref,
        connectivity_policy,
        node_policies,
    )
    from plan.spec import MigrationSpec
    from plan.waves import Wave
    from workflows.continuation import Continuation
    from workflows.gates import Gates, planned_gates
    from workflows.identity import (
        APPROVE_UPDATE,
        CLUSTER_HALT_SIGNAL,
        CLUSTER_WORKFLOW,
        DECIDE_SIGNAL,
        DECIDE_UPDATE,
        NODE_REPORT_SIGNAL,
        NODES_PAGE_QUERY,
        PAUSE_UPDATE,
        PHASE_ATTRIBUTE,
        PROGRESS_QUERY,
        PROGRESS_SUMMARY_QUERY,
        RESUME_UPDATE,
        node_workflow_id,
        wave_workflow_id,
    )
    from workflows.messages import (
        ApproveRequest,
        ClusterHalt,
        DecideRequest,
        Decision,
        MigrationInput,
        NodeMigrationInput,
        PauseRequest,
        WaveMigrationInput,
    )
    from workflows.node import NodeMigrationWorkflow
    from workflows.progress import (
        NodeProgress,
        NodeState,
        Phase,
        Progress,
        WaveProgress,
        WaveResult,
    )
    from workflows.progress_summary import (
        NodesPage,
        NodesPageRequest,
        ProgressSummary,
        nodes_page,
        summarize,
    )
    from workflows.signal_inputs import signal_input
    from workflows.steps import describe_failure, run_step, start_watch
    from workflows.wave import WaveMigrationWorkflow

INSTALL_TIMEOUT = 900.0
# The agents' rolling restart at finalize: 5,000 agents two at a time, each Ready within
# 30 s, is about 21 hours.
ROLLOUT_BOUND = timedelta(hours=24)
# Runs recorded before the render step existed replay without it.
RENDER_CHART_PATCH = "render-chart-before-preflight"
# Runs recorded before a long run continued as new between waves went on in the same run.
CONTINUE_AS_NEW_PATCH = "continue-as-new-between-waves"
# Runs recorded before the echo mesh and the connectivity monitor existed replay without them.
ECHO_MESH_PATCH = "echo-mesh-and-connectivity-monitor"
ECHO_MESH_TIMEOUT = 300.0
# Runs started by a fleet before the fleet heard of its clusters' halts replay without telling.
HALTS_TO_FLEET_PATCH = "cluster-halts-reach-the-fleet"
# ...and without telling it of nodes blocked, each waiting for the operator's `decide`.
BLOCKED_NODES_TO_FLEET_PATCH = "blocked-nodes-reach-the-fleet"
# Runs recorded before a wave's nodes ran in a WaveMigration child started each node itself.
WAVE_WORKFLOW_PATCH = "nodes-run-in-a-wave-workflow"
# ...and a wave too large for one WaveMigration's history ran in one all the same.
WAVE_PARTS_PATCH = "large-waves-run-in-parts"
FAILED_PAIRS_NAMED = 5  # in the halt message; progress keeps more
CATCH_UP_WAVE = 0  # the wave number of nodes migrated after the planned waves
# Our own metrics, served with the SDK's by the worker's Prometheus endpoint. The workflow's
# meter records nothing during replay and adds no history events.
NODES_FINISHED_METRIC = "cilium_migrate_nodes_finished"
GATE_WAIT_METRIC = "cilium_migrate_gate_wait_seconds"


@workflow.defn(name=CLUSTER_WORKFLOW)
class ClusterMigrationWorkflow:
    @workflow.init
    def __init__(self, input: MigrationInput) -> None:
        self.spec: MigrationSpec = input.spec
        carried = input.continued
        self.progress = (carried.progress.model_copy(deep=True) if carried
                         else Progress(cluster=input.spec.cluster.name,
                                       task_queue=input.spec.cluster.task_queue))
        self.gates = Gates(input.spec.approvals, carried.gates if carried else None)
        self.continue_as_new_at = input.continue_as_new_at
        self.fold_migrated_above = input.fold_migrated_above
        self.wave_part_nodes = input.wave_part_nodes
        self.cluster: ClusterRef = cluster_ref(input.spec.cluster)
        self.children: dict[str, workflow.ChildWorkflowHandle[NodeMigrationWorkflow,
                                                              NodeProgress]] = {}
        self._in_wave_workflow: set[str] = set()  # nodes the running WaveMigration started
        self._catch_up: list[str] = []  # nodes the operator chose to migrate before finalize
        self.connectivity: ConnectivityPolicy | None = connectivity_policy(
            input.spec.connectivity)
        self._monitor: workflow.ActivityHandle[ConnectivityFigures] | None = None
        self._wave_moving = False  # the current wave's nodes are still on their way
        self._told_fleet: str | None = None  # the halt a fleet that started this run last heard
        self._blocked: dict[str, str] = {}  # nodes in the operator's hands, and how

    # ---- the procedure --------------------------------------------------------------------

    @workflow.run
    async def run(self, input: MigrationInput) -> Progress:
        telling_the_fleet = self._tell_the_fleet_about_halts()
        try:
            if input.continued is None:  # the migration's first run
                self.progress.started_at = workflow.now()
                facts = await self._discover()
                chart = await self._render_chart(facts)
                plan = self._preflight_and_plan(facts, chart)
                await self._gate(gate_names.PREFLIGHT_GATE)
                await self._gate(gate_names.INSTALL_GATE)
                await self._install_cilium(plan)
                await self._apply_node_config()
                await self._deploy_echo_mesh(plan)
                policies, flannel = node_policies(self.spec, facts), facts.flannel
                first_wave = 0
            else:  # a previous run got this far and continued as new
                carried = input.continued
                plan, policies, flannel = carried.plan, carried.policies, carried.flannel
                first_wave = carried.next_wave
            await self._migrate_nodes(plan, first_wave, policies, flannel)
            await self._every_node_migrated(policies)
            await self._gate(gate_names.FINALIZE_GATE)
            await self._every_node_migrated(policies)  # nodes may have joined meanwhile
            await self._finalize(plan)
            await self._gate(gate_names.REMOVE_FLANNEL_GATE)
            await self._remove_flannel(flannel)
        except (asyncio.CancelledError, ActivityError, ChildWorkflowError,
                ApplicationError) as error:
            # An abort while one of this workflow's own steps runs arrives as that step's
            # ActivityError (cancelled): it is an abort all the same.
            cancelled = isinstance(error, asyncio.CancelledError) or is_cancelled_exception(error)
            self.progress.error = ("aborted by the operator" if cancelled
                                   else describe_failure(error))
            try:
                await self._remove_echo_mesh()
            except ActivityError as removal:  # the first failure stays the run's failure
                self.progress.error += ("; the echo mesh was not removed: "
                                        + describe_failure(removal))
            self.progress.finished_at = workflow.now()
            self._set_phase(Phase.CANCELLED if cancelled else Phase.FAILED)
            raise
        self.progress.finished_at = workflow.now()
        self._set_phase(Phase.COMPLETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if telling_the_fleet is not None:
            telling_the_fleet.cancel()  # the fleet learns of the end from the child's result
        return self.progress

    def _tell_the_fleet_about_halts(self) -> asyncio.Task[None] | None:
        """A cluster that a fleet started tells the fleet whenever its halt starts, changes
        or ends, so the fleet holds its next clusters and stages while this one needs the
        operator (a failed or rolled-back node halts the cluster; it does not fail it), and
        while a node waits for the operator's `decide` (the cluster's wave waits; the fleet
        must not start another cluster meanwhile).

        A migration started by hand has no parent and records nothing of this."""
        parent = workflow.info().parent
        if parent is None or not workflow.patched(HALTS_TO_FLEET_PATCH):
            return None
        with_blocked = workflow.patched(BLOCKED_NODES_TO_FLEET_PATCH)
        fleet = workflow.get_external_workflow_handle(parent.workflow_id)

        async def tell() -> None:
            while True:
                await workflow.wait_condition(
                    lambda: self._operator_needed(with_blocked) != self._told_fleet)
                self._told_fleet = self._operator_needed(with_blocked)
                try:
                    await fleet.signal(CLUSTER_HALT_SIGNAL, ClusterHalt(
                        cluster=self.progress.cluster, halted=self._told_fleet))
                except FailureError:  # the fleet ended (aborted, say): nobody to tell
                    return

        return asyncio.create_task(tell())

    def _operator_needed(self, with_blocked: bool) -> str | None:
        """What holds this run until the operator acts: its halt, or else the nodes waiting
        for `decide` (only for runs recorded since a fleet hears of those)."""
        if self.progress.halted or not with_blocked or not self._blocked:
            return self.progress.halted
        return "; ".join(f"node {node} {why}" for node, why in sorted(self._blocked.items()))

    async def _discover(self) -> ClusterFacts:
        self._set_phase(Phase.DISCOVERING)
        return await run_step(Activity.DISCOVER, self.cluster, ClusterFacts,
                              timeout=timedelta(minutes=2))

    async def _render_chart(self, facts: ClusterFacts) -> ChartVerdict:
        """The chart itself judges both phases' values before preflight decides: a value it
        refuses stops the run here, not halfway through the install or at finalize."""
        if not workflow.patched(RENDER_CHART_PATCH):
            return None  # a run recorded before the chart was rendered
        self._set_phase(Phase.PREFLIGHT)
        return await run_step(Activity.RENDER_CHART, render_input(self.spec, facts),
                              ChartRender, timeout=timedelta(minutes=6))

    def _preflight_and_plan(self, facts: ClusterFacts, chart: ChartVerdict) -> MigrationPlan:
        """The same plan `cilium-migrate plan` shows for this spec and these facts."""
        self._set_phase(Phase.PREFLIGHT)
        plan = make_plan(self.spec, facts, chart)
        self.progress.findings = plan.findings
        if stopping := blocking(plan.findings):
            raise ApplicationError(
                "preflight found blocking problems: " + "; ".join(_line(f) for f in stopping),
                [f.model_dump() for f in stopping], type="PreflightBlocked", non_retryable=True)
        self.progress.excluded_nodes = plan.excluded_nodes
        self.progress.waves = [WaveProgress(index=w.index, kind=w.kind, nodes=w.nodes,
                                            zone=w.zone) for w in plan.waves]
        self.progress.nodes = {n: NodeProgress(name=n, wave=w.index)
                               for w in plan.waves for n in w.nodes}
        self.gates.plan(planned_gates(self.spec.approvals.policy, plan.waves,
                                      warnings=bool(unacknowledged(plan.findings))))
        return plan

    async def _install_cilium(self, plan: MigrationPlan) -> None:
        self._set_phase(Phase.INSTALLING)
        await self._helm(plan.initial_values)
        await run_step(Activity.WAIT_FOR_CILIUM, CiliumWaitInput(
            cluster=self.cluster, namespace=self.spec.cilium.namespace,
            timeout_seconds=INSTALL_TIMEOUT), CiliumStatus,
            timeout=timedelta(seconds=INSTALL_TIMEOUT), long=True)

    async def _apply_node_config(self) -> None:
        self._set_phase(Phase.CONFIGURING)
        await run_step(Activity.APPLY_NODE_CONFIG, node_config(self.spec), type(None))

    async def _migrate_nodes(self, plan: MigrationPlan, first_wave: int,
                             policies: NodePolicies, flannel: FlannelFacts | None) -> None:
        self._set_phase(Phase.MIGRATING)
        for index in range(first_wave, len(plan.waves)):
            wave = plan.waves[index]
            await self._wait_until_clear()
            gates = self._wave_gates(index, wave)
            for gate in gates:
                self._open_gate(gate)
            # The safe point: every node of the last wave has finished, none has started. A run
            # migrates at least one wave before it continues as new again.
            if index > first_wave:
                await self._continue_as_new_if_long(plan, index, policies, flannel)
            for gate in gates:
                await self._gate(gate)
            progress = self.progress.waves[index]
            progress.state = "running"
            self._wave_moving = True
            monitor = asyncio.create_task(self._watch_connectivity(progress, policies))
            try:
                if self._nodes_gated(wave) or not workflow.patched(WAVE_WORKFLOW_PATCH):
                    await asyncio.gather(*(self._migrate_node(node, wave.index, policies)
                                           for node in wave.nodes))
                else:
                    await self._migrate_wave(wave, policies)
            except GeneratorExit:
                raise  # a worker evicting this run from its cache: nothing may be awaited
            except BaseException:
                await self._stop_watching(monitor)  # an abort, or a node's failure
                raise
            await self._stop_watching(monitor)
            health = await run_step(Activity.CHECK_HEALTH, self._health_input(flannel),
                                    HealthReport)
            if health.problems and not self.progress.halted:
                self.progress.halted = (f"health check after wave {wave.index}: "
                                        + "; ".join(health.problems))
            progress.state = "halted" if self.progress.halted else "done"
        await self._wait_until_clear()

    async def _deploy_echo_mesh(self, plan: MigrationPlan) -> None:
        """Before the first node moves: the echo pods verify calls and the monitor watches."""
        if not workflow.patched(ECHO_MESH_PATCH) or self.connectivity is None:
            return
        self.progress.echo_mesh = await run_step(Activity.DEPLOY_ECHO_MESH, EchoMeshInput(
            cluster=self.cluster, migration_id=workflow.info().workflow_id,
            policy=self.connectivity, exclude_nodes=plan.excluded_nodes,
            timeout_seconds=ECHO_MESH_TIMEOUT), EchoMeshStatus,
            timeout=timedelta(seconds=ECHO_MESH_TIMEOUT), long=True)

    async def _remove_echo_mesh(self) -> None:
        """At finalize, and when the run ends early (aborted or failed): nothing of the mesh
        stays behind. Once only, whoever asks first."""
        mesh = self.progress.echo_mesh
        if mesh is None or self.progress.echo_mesh_removed:
            return
        self.progress.echo_mesh_removed = True
        await run_step(Activity.REMOVE_ECHO_MESH, EchoMeshRemoval(
            cluster=self.cluster, migration_id=workflow.info().workflow_id,
            namespace=mesh.namespace, timeout_seconds=ECHO_MESH_TIMEOUT), bool,
            timeout=timedelta(seconds=ECHO_MESH_TIMEOUT), long=True)

    async def _watch_connectivity(self, wave: WaveProgress, policies: NodePolicies) -> None:
        """While the wave's nodes move, echo pods call each other across nodes and overlays
        (`activities.connectivity`); the wave keeps the sum of what each monitor counted. Too
        many failures within the window halt the rollout: no new wave starts until the operator
        resumes (or rolls nodes back). After a halt the wave's monitor only counts."""
        policy = self.connectivity
        if policy is None or self.progress.echo_mesh is None:
            return
        stop_on_breach = True
        while self._wave_moving:
            self._monitor = start_watch(Activity.MONITOR_CONNECTIVITY, MonitorInput(
                cluster=self.cluster, wave=wave.index, policy=policy,
                overlays=policies.overlays, stop_on_breach=stop_on_breach),
                ConnectivityFigures)
            try:
                figures = await self._monitor
            except ActivityError as error:
                if not is_cancelled_exception(error):  # cancelled before it counted anything
                    wave.connectivity = (wave.connectivity or ConnectivityFigures()).plus(
                        ConnectivityFigures(unavailable=f"the monitor failed: "
                                                        f"{describe_failure(error)}"))
                return
            finally:
                self._monitor = None
            wave.connectivity = figures if wave.connectivity is None else (
                wave.connectivity.plus(figures))
            if figures.breached and stop_on_breach:
                stop_on_breach = False
                if not self.progress.halted:
                    self.progress.halted = _connectivity_halt(wave.index, policy, figures)
            if figures.unavailable and not figures.requests:
                return  # nothing here can carry a request; the figures say why

    async def _stop_watching(self, monitor: asyncio.Task[None]) -> None:
        """The wave's nodes are done: the running monitor is cancelled and returns what it
        counted (it is cancelled with WAIT_CANCELLATION_COMPLETED: its result still arrives).

        Shielded: an abort arriving meanwhile would otherwise be handed on to the monitor's
        task, whose activity absorbs it (it waits for the step's own end), and the run would
        go on as if never aborted. The abort waits for the figures, then goes on as an abort."""
        self._wave_moving = False
        if self._monitor is not None:
            self._monitor.cancel()
        try:
            await asyncio.shield(monitor)
        except asyncio.CancelledError:
            await monitor
            raise

    async def _migrate_node(self, node: str, wave: int, policies: NodePolicies) -> None:
        await self._gate(gate_names.node_gate(node))
        await workflow.wait_condition(lambda: not self.progress.paused)
        record = self.progress.nodes[node]
        record.state, record.started_at = NodeState.RUNNING, workflow.now()
        record.folded = False  # migrated once and now again (a catch-up): a live record
        migration_id = workflow.info().workflow_id
        handle = await workflow.start_child_workflow(
            NodeMigrationWorkflow.run, NodeMigrationInput(
                cluster=self.cluster, node=node, wave=wave, migration_id=migration_id,
                policies=policies),
            id=node_workflow_id(migration_id, node),
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        self.children[node] = handle
        try:
            result = await handle
        except ChildWorkflowError as error:
            if is_cancelled_exception(error):
                self._node_cancelled(node)
                raise
            self._node_failed(node, describe_failure(error))
            return
        self._node_finished(result)

    async def _migrate_wave(self, wave: Wave, policies: NodePolicies) -> None:
        """The wave's nodes, started together by a WaveMigration child (several, side by side,
        for a wave too large for one): the nodes' own child events go to the wave's history,
        and this one records a few per wave. The nodes report here when blocked and hear
        decisions from here (by ID), as if this run started them.
        A node cancelled (an abort) ends the wave as a cancellation, after every record is in."""
        await workflow.wait_condition(lambda: not self.progress.paused)
        for node in wave.nodes:
            record = self.progress.nodes[node]
            record.state, record.started_at = NodeState.RUNNING, workflow.now()
            record.folded = False
            self.children.pop(node, None)
        self._in_wave_workflow = set(wave.nodes)
        parts = self._wave_parts(wave)
        try:
            if len(parts) == 1:
                records = (await self._run_wave_part(wave, parts[0], None, policies)).nodes
            else:
                records = await self._run_wave_parts(wave, parts, policies)
        finally:
            self._in_wave_workflow = set()
        for record in records:
            if record.state is NodeState.CANCELLED:
                self._node_cancelled(record.name)
            elif record.state is NodeState.FAILED:
                self._node_failed(record.name, record.error or "failed")
            else:
                self._node_finished(record)
        if cancelled := [r.name for r in records if r.state is NodeState.CANCELLED]:
            raise asyncio.CancelledError(f"cancelled: {', '.join(cancelled)}")

    def _wave_parts(self, wave: Wave) -> list[list[str]]:
        """The wave's nodes as one WaveMigration holds them, or, past wave_part_nodes nodes,
        cut in order into parts of nearly equal size that run side by side."""
        count = -(-len(wave.nodes) // self.wave_part_nodes)  # ceiling
        if count <= 1 or not workflow.patched(WAVE_PARTS_PATCH):
            return [wave.nodes]
        size = -(-len(wave.nodes) // count)
        return [wave.nodes[start:start + size] for start in range(0, len(wave.nodes), size)]

    async def _run_wave_part(self, wave: Wave, nodes: list[str], part: int | None,
                             policies: NodePolicies) -> WaveResult:
        """One WaveMigration. Cancelled before its start was recorded (an abort), every one
        of its nodes is cancelled; once started, it answers a cancellation with every node's
        record (workflows/wave.py)."""
        migration_id = workflow.info().workflow_id
        try:
            return await workflow.execute_child_workflow(
                WaveMigrationWorkflow.run, WaveMigrationInput(
                    cluster=self.cluster, wave=wave.index, nodes=nodes,
                    migration_id=migration_id, policies=policies,
                    fold_migrated=self._folds_migrated()),
                id=wave_workflow_id(migration_id, wave.index, part),
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
        except asyncio.CancelledError:
            return WaveResult(nodes=[NodeProgress(name=node, wave=wave.index,
                                                  state=NodeState.CANCELLED)
                                     for node in nodes])

    async def _run_wave_parts(self, wave: Wave, parts: list[list[str]],
                              policies: NodePolicies) -> list[NodeProgress]:
        """Every part at once; an abort is handed to each part, and each still returns its
        nodes' records, in the wave's order."""
        running = [asyncio.create_task(self._run_wave_part(wave, nodes, part, policies))
                   for part, nodes in enumerate(parts)]
        try:
            await workflow.wait(running)
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            await workflow.wait(running)
        by_name = {record.name: record for task in running for record in task.result().nodes}
        return [by_name[node] for node in wave.nodes]

    def _node_cancelled(self, node: str) -> None:
        self._blocked.pop(node, None)
        record = self.progress.nodes[node]  # the child's last report replaced it
        record.state, record.finished_at = NodeState.CANCELLED, workflow.now()
        _count_node_finished(NodeState.CANCELLED)

    def _node_failed(self, node: str, error: str) -> None:
        self._blocked.pop(node, None)
        record = self.progress.nodes[node]  # the child's last report replaced it
        record.state, record.error = NodeState.FAILED, error
        _count_node_finished(NodeState.FAILED)
        self.progress.halted = f"node {node} failed: {record.error}"

    def _node_finished(self, result: NodeProgress) -> None:
        """A node workflow's result. A large migration keeps of a migrated node only what it
        needs to go on and count; the node workflow's result holds the rest (and `status`
        reads it from there)."""
        self._blocked.pop(result.name, None)
        self.progress.nodes[result.name] = result.kept(self._folds_migrated())
        _count_node_finished(result.state)
        if result.state is not NodeState.MIGRATED:
            self.progress.halted = (f"node {result.name} was {result.state.value}; resume to "
                                    "go on with the next wave")

    def _folds_migrated(self) -> bool:
        return len(self.progress.nodes) > self.fold_migrated_above

    async def _every_node_migrated(self, policies: NodePolicies) -> None:
        """Finalize switches every node to Cilium without a drain or a reboot and removes
        flannel, so it waits until every node in the cluster now was migrated by this run. The
        operator migrates a node left behind (`decide NODE retry`: excluded, skipped, rolled
        back, failed, or joined after the plan), or removes it from the cluster and resumes."""
        while True:
            cluster = await run_step(Activity.LIST_SWITCHED_NODES, self.cluster, SwitchedNodes)
            self.progress.not_migrated = self._not_migrated(cluster)
            if not self.progress.not_migrated:
                return
            self.progress.halted = (
                "finalize waits for every node to run Cilium; not migrated: " + ", ".join(
                    f"{node} ({why})" for node, why in self.progress.not_migrated.items())
                + ". `decide NODE retry` migrates one; or remove it from the cluster and resume")
            await workflow.wait_condition(lambda: not self.progress.halted or bool(self._catch_up))
            while self._catch_up:
                await self._migrate_node(self._catch_up.pop(0), CATCH_UP_WAVE, policies)

    def _not_migrated(self, cluster: SwitchedNodes) -> dict[str, str]:
        """Every node in the cluster now that this run has not migrated, and why."""
        left = {}
        for name in sorted({*cluster.switched, *cluster.unswitched}):
            record = self.progress.nodes.get(name)
            if record is not None and record.state is NodeState.MIGRATED:
                if name in cluster.unswitched:
                    left[name] = "migrated, but its label was removed since"
            elif record is not None:
                left[name] = record.state.value
            elif name in self.progress.excluded_nodes:
                left[name] = "excluded"
            else:
                left[name] = "not in the plan: joined later?"
        return left

    async def _finalize(self, plan: MigrationPlan) -> None:
        """Phase 4: every node runs Cilium; hand the cluster over to Cilium alone."""
        self._set_phase(Phase.FINALIZING)
        await self._remove_echo_mesh()
        pools = [str(c) for c in self.spec.network.pod_cidrs]
        await run_step(Activity.RECYCLE_PODS, RecycleInput(
            cluster=self.cluster, cilium_pools=pools, timeout_seconds=600.0),
            RecycleResult, timeout=timedelta(minutes=10), long=True)
        self.progress.values_diff = plan.values_diff
        await self._helm(plan.final_values)
        # The step waits while the rollout moves (a few agents at a time: hours on thousands
        # of nodes) and fails once it stands still for INSTALL_TIMEOUT; a lost worker is told
        # by its heartbeats, not by this bound.
        await run_step(Activity.ROLLOUT_RESTART, RolloutRestartInput(
            cluster=self.cluster, namespace=self.spec.cilium.namespace,
            timeout_seconds=INSTALL_TIMEOUT,
            restarted_at=workflow.now().isoformat()),
            type(None), timeout=ROLLOUT_BOUND, long=True)
        await run_step(Activity.DELETE_NODE_CONFIG, node_config(self.spec), type(None))

    async def _remove_flannel(self, flannel: FlannelFacts | None) -> None:
        if not self.spec.finalize.remove_flannel or flannel is None:
            return
        self._set_phase(Phase.REMOVING_FLANNEL)
        await run_step(Activity.REMOVE_FLANNEL, RemoveFlannelInput(
            cluster=self.cluster, namespace=flannel.namespace,
            daemonset=flannel.daemonset), RemoveFlannelResult,
            timeout=timedelta(minutes=5))

    # ---- operator messages ----------------------------------------------------------------

    @workflow.update(name=APPROVE_UPDATE)
    def approve(self, request: ApproveRequest) -> str:
        # The Update's ID links the approval to its accepted event in history, where the server
        # wrote the sending client's identity (the SDK does not hand the handler that identity).
        # Only the run's state changes, no command does: older histories replay unpatched.
        update = workflow.current_update_info()
        approval = self.gates.approve(request.gate, request.approver, request.reason,
                                      workflow.now(), update.id if update else None)
        self.progress.approvals.append(approval)
        self.progress.pending_gates = list(self.gates.pending)
        return f"gate {request.gate} approved by {request.approver}"

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        self.gates.refuse_invalid(request.gate, request.approver)

    @workflow.update(name=PAUSE_UPDATE)
    def pause(self, request: PauseRequest) -> str:
        self.progress.paused = True
        return "paused: running nodes finish their migration, no new node starts"

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        if self.progress.paused:
            raise ValueError("the migration is already paused")
        if self._finished():
            raise ValueError(f"the migration is {self.progress.phase.value}")

    @workflow.update(name=RESUME_UPDATE)
    def resume(self, request: PauseRequest) -> str:
        self.progress.paused = False
        self.progress.halted = None
        return "resumed"

    @resume.validator
    def _validate_resume(self, request: PauseRequest) -> None:
        if not self.progress.paused and not self.progress.halted:
            raise ValueError("the migration is neither paused nor halted")

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, request: DecideRequest) -> str:
        if self._waiting_for_finalize(request.node):
            self._catch_up.append(request.node)
            self.progress.nodes[request.node] = NodeProgress(name=request.node,
                                                             wave=CATCH_UP_WAVE)
            self.progress.halted = None
            return f"node {request.node}: migrating it now"
        if request.node in self._in_wave_workflow:  # the wave's child, this run's node
            await workflow.get_external_workflow_handle(node_workflow_id(
                workflow.info().workflow_id, request.node)).signal(DECIDE_SIGNAL, request)
        else:
            await self.children[request.node].signal(DECIDE_SIGNAL, request)
        node = self.progress.nodes[request.node]
        node.state, node.blocker = NodeState.RUNNING, None
        if request.decision is Decision.RETRY:
            self._blocked.pop(request.node, None)
        else:  # a skipped or rolled-back node halts the run once it ends: no gap in between
            self._blocked[request.node] = f"is under the {request.decision.value} decided"
        return f"node {request.node}: {request.decision.value}"

    @decide.validator
    def _validate_decide(self, request: DecideRequest) -> None:
        if self._waiting_for_finalize(request.node):
            if request.decision is not Decision.RETRY:
                raise ValueError(f"finalize waits for node {request.node} to run Cilium: only "
                                 "retry (migrate it now) is possible, or remove the node from "
                                 "the cluster and resume")
            return
        node = self.progress.nodes.get(request.node)
        if node is None:
            raise ValueError(f"no node {request.node!r} in this migration")
        running = request.node in self.children or request.node in self._in_wave_workflow
        if node.state is not NodeState.BLOCKED or not running:
            raise ValueError(f"node {request.node} is {node.state.value}, not waiting for a "
                             "decision")

    def _waiting_for_finalize(self, node: str) -> bool:
        return (node in self.progress.not_migrated and node not in self._catch_up
                and bool(self.progress.halted))

    @workflow.signal(name=NODE_REPORT_SIGNAL)
    def node_report(self, *args: object) -> None:
        """A child's NodeProgress; anything else is dropped (workflows/signal_inputs.py). A
        child always sends its record whole, so one without a state is not a report."""
        report = signal_input(NodeProgress, args, NODE_REPORT_SIGNAL, required=("state",))
        if report is not None and report.name in self.progress.nodes:
            self.progress.nodes[report.name] = report
            if report.state is NodeState.BLOCKED:
                self._blocked[report.name] = f"waits for `decide` ({report.blocker or 'blocked'})"
            else:
                self._blocked.pop(report.name, None)

    @workflow.query(name=PROGRESS_QUERY)
    def get_progress(self) -> Progress:
        return self.progress

    @workflow.query(name=PROGRESS_SUMMARY_QUERY)
    def get_summary(self) -> ProgressSummary:
        return summarize(self.progress)

    @workflow.query(name=NODES_PAGE_QUERY)
    def get_nodes_page(self, request: NodesPageRequest) -> NodesPage:
        return nodes_page(self.progress, request)

    # ---- helpers ---------------------------------------------------------------------------

    def _wave_gates(self, index: int, wave: Wave) -> list[str]:
        """The gates before ``wave``, the ``index``-th of the plan."""
        gates = [gate_names.ROLLOUT_GATE] if index == 0 else []
        return [*gates, gate_names.wave_gate(wave)]

    def _nodes_gated(self, wave: Wave) -> bool:
        """Whether the wave's nodes each have an approval gate of their own (per-node
        approvals): such nodes start one by one as they are approved, from this run."""
        return any(gate_names.node_gate(node) in self.gates.planned for node in wave.nodes)

    def _open_gate(self, gate: str) -> bool:
        """Marks ``gate`` pending; False when it needs no wait (unplanned or approved)."""
        if not self.gates.open(gate):
            return False
        self.progress.pending_gates = list(self.gates.pending)
        return True

    async def _gate(self, gate: str) -> None:
        if self._open_gate(gate):
            opened = workflow.now()
            await workflow.wait_condition(lambda: gate in self.gates.approved)
            _record_gate_wait(gate, (workflow.now() - opened).total_seconds())

    async def _wait_until_clear(self) -> None:
        await workflow.wait_condition(
            lambda: not self.progress.paused and not self.progress.halted)

    async def _helm(self, values: dict[str, object]) -> None:
        result = await run_step(Activity.HELM_UPGRADE, HelmInput(
            cluster=self.cluster, namespace=self.spec.cilium.namespace,
            chart=chart_ref(self.spec), values=values, timeout_seconds=INSTALL_TIMEOUT),
            HelmResult, timeout=timedelta(seconds=INSTALL_TIMEOUT), long=True)
        self.progress.chart = result.chart

    def _set_phase(self, phase: Phase) -> None:
        if self.progress.phase is not phase:
            self.progress.phase = phase
            workflow.upsert_search_attributes([PHASE_ATTRIBUTE.value_set(phase.value)])

    def _finished(self) -> bool:
        return self.progress.phase.ended

    def _health_input(self, flannel: FlannelFacts | None) -> HealthInput:
        return HealthInput(
            cluster=self.cluster, cilium_namespace=self.spec.cilium.namespace,
            cilium_pools=[str(c) for c in self.spec.network.pod_cidrs],
            flannel_namespace=flannel.namespace if flannel else None,
            flannel_daemonset=flannel.daemonset if flannel else None)

    async def _continue_as_new_if_long(self, plan: MigrationPlan, next_wave: int,
                                       policies: NodePolicies,
                                       flannel: FlannelFacts | None) -> None:
        """Continues as new when this run's history is long, carrying everything the next run
        needs to go on from ``next_wave``. Only between waves: no child is running, so none is
        left without its parent, and no node waits for a decision."""
        info = workflow.info()
        long = (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self.continue_as_new_at)
        if not long or not workflow.patched(CONTINUE_AS_NEW_PATCH):
            return
        # An Update accepted by this run finishes here, so what it did is in the state carried.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(MigrationInput(
            spec=self.spec, continue_as_new_at=self.continue_as_new_at,
            fold_migrated_above=self.fold_migrated_above,
            wave_part_nodes=self.wave_part_nodes,
            continued=Continuation(plan=plan, next_wave=next_wave, policies=policies,
                                   flannel=flannel, progress=self.progress,
                                   gates=self.gates.book())))


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


def _connectivity_halt(wave: int, policy: ConnectivityPolicy,
                       figures: ConnectivityFigures) -> str:
    pairs = "; ".join(
        f"{f.source} ({f.source_node}, {f.source_ip}) -> {f.target} ({f.target_node}, "
        f"{f.target_ip}) [{f.kind}]: {f.error}"
        for f in figures.failures[-FAILED_PAIRS_NAMED:])
    return (f"connectivity in wave {wave}: {figures.worst_window} requests failed within "
            f"{policy.window_seconds:.0f}s (at most {policy.max_failed_requests} allowed): "
            f"{pairs}. Resume to go on, or roll nodes back")


def _line(finding: Finding) -> str:
    return f"[{finding.id}] {finding.message}"

