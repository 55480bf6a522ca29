"""FleetMigration: many clusters, stage after stage, each cluster its own ClusterMigration.

`run` reads like the rollout: for each stage, wait until nothing holds the fleet, wait for the
stage's approval if it needs one, migrate its clusters (so many at once), then let it soak
before the next stage starts, its clusters' health checked all along. Each cluster runs as a
child with its usual workflow ID (`cilium-migrate/<cluster>`), so every per-cluster command
(status, approve, decide, pause, abort) works on it as on a migration started by hand.

A cluster whose migration fails (or is aborted on its own) halts the fleet: no new cluster and
no new stage starts, clusters already running go on, and the operator decides with `decide`
whether to retry that cluster or skip it. A cluster whose own migration halts (a node failed or
was rolled back, a health or connectivity check tripped) says so, and holds the fleet the same
way until the operator mends it with that cluster's commands and it goes on. A cluster that
degrades while its stage soaks halts the fleet too, until the operator resumes it. Aborting the
fleet is cancelling it: the running clusters are cancelled and each compensates as its own abort
does (nothing left cordoned).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from plan.contract import Activity, HealthInput, HealthReport
    from plan.fleet import Fleet, FleetStage
    from plan.policies import cluster_ref
    from workflows.cluster import ClusterMigrationWorkflow
    from workflows.fleet_progress import (
        ClusterState,
        FleetClusterProgress,
        FleetPhase,
        FleetProgress,
        StageState,
    )
    from workflows.gates import Gates
    from workflows.identity import (
        APPROVE_UPDATE,
        CLUSTER_ATTRIBUTE,
        CLUSTER_HALT_SIGNAL,
        DECIDE_UPDATE,
        FLEET_ATTRIBUTE,
        FLEET_WORKFLOW,
        PAUSE_UPDATE,
        PHASE_ATTRIBUTE,
        PROGRESS_QUERY,
        RESUME_UPDATE,
        STAGE_ATTRIBUTE,
        cluster_workflow_id,
    )
    from workflows.messages import (
        ApproveRequest,
        ClusterDecision,
        ClusterHalt,
        FleetDecideRequest,
        FleetInput,
        MigrationInput,
        PauseRequest,
    )
    from workflows.progress import Phase
    from workflows.signal_inputs import signal_input
    from workflows.steps import describe_failure, run_step

# A soak is watched: its stage's clusters are checked every soak / SOAK_CHECKS, but not more
# often than SOAK_CHECK_EVERY, and once when it ends.
SOAK_CHECKS = 48
SOAK_CHECK_EVERY = timedelta(seconds=30)


@workflow.defn(name=FLEET_WORKFLOW)
class FleetMigrationWorkflow:
    @workflow.init
    def __init__(self, input: FleetInput) -> None:
        self.fleet: Fleet = input.fleet
        ids = {spec.cluster.name: cluster_workflow_id(spec.cluster.name)
               for spec in self.fleet.clusters}
        self.progress = FleetProgress.planned(self.fleet, ids)
        self.gates = Gates(self.fleet.approvals)
        self.gates.plan([stage.gate for stage in self.fleet.stages if stage.approval])
        self.decisions: dict[str, ClusterDecision] = {}
        self.running: list[asyncio.Task[None]] = []  # the current stage's cluster tasks
        self.aborting = False
        self.soak_trouble: str | None = None  # what degraded in the soak, until resumed

    # ---- the rollout ----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: FleetInput) -> FleetProgress:
        self.progress.started_at = workflow.now()
        try:
            for stage in self.fleet.stages:
                await self._wait_until_clear()
                await self._approval(stage)
                await self._migrate_clusters(stage)
                await self._soak(stage)
        except (asyncio.CancelledError, ActivityError) as error:
            # An abort during a soak's health check can arrive as that step's cancellation;
            # any other failure of a check is a finding (`_health`), never an error here.
            if not (isinstance(error, asyncio.CancelledError) or is_cancelled_exception(error)):
                raise
            await self._abort_running_clusters()
            self.progress.error = "aborted by the operator"
            self.progress.finished_at = workflow.now()
            self.progress.phase = FleetPhase.CANCELLED
            raise
        self.progress.finished_at = workflow.now()
        self.progress.phase = FleetPhase.COMPLETED
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress

    async def _approval(self, stage: FleetStage) -> None:
        self._enter(stage, StageState.WAITING_APPROVAL)
        if self.gates.open(stage.gate):
            self.progress.pending_gates = list(self.gates.pending)
            await workflow.wait_condition(lambda: stage.gate in self.gates.approved)

    async def _migrate_clusters(self, stage: FleetStage) -> None:
        """Every cluster of the stage, ``concurrency`` at a time in the order listed. The
        tasks are not awaited by the run itself, so that an abort reaches the run first and
        the run cancels them knowing it is an abort (workflows/fleet.py docstring)."""
        self._enter(stage, StageState.RUNNING)
        slots = asyncio.Semaphore(stage.concurrency)
        self.running = [asyncio.create_task(self._migrate_cluster(name, stage, slots))
                        for name in stage.clusters]
        await workflow.wait_condition(lambda: all(task.done() for task in self.running))
        for task in self.running:
            task.result()  # a task's unexpected error fails the workflow task: a bug to fix

    async def _soak(self, stage: FleetStage) -> None:
        """The stage's clusters must stay healthy for the whole soak (durable timers: a worker
        restart does not shorten it). A cluster that degrades halts the fleet; once the
        operator has mended it and resumes, the soak starts again from its beginning."""
        record = self.progress.stages[stage.index - 1]
        soak = timedelta(seconds=stage.soak_seconds)
        while soak:
            self._enter(stage, StageState.SOAKING)
            record.soak_ends_at = workflow.now() + soak
            problems = await self._watch_soak(stage, record.soak_ends_at)
            record.soak_problems = problems
            if not problems:
                break
            self.soak_trouble = (f"stage {stage.index} ({stage.name}) degraded while soaking: "
                                 + "; ".join(problems))
            self._update_halt()
            await workflow.wait_condition(lambda: self.soak_trouble is None)
        record.state, record.finished_at = StageState.DONE, workflow.now()

    async def _watch_soak(self, stage: FleetStage, ends_at: datetime) -> list[str]:
        """Checks the stage's migrated clusters at most SOAK_CHECKS times over the soak (a
        week's soak keeps a bounded history), and once at its end; the first problems found."""
        interval = max(SOAK_CHECK_EVERY, timedelta(seconds=stage.soak_seconds) / SOAK_CHECKS)
        while (left := ends_at - workflow.now()) > timedelta(0):
            await workflow.sleep(min(interval, left))
            migrated = [c for c in stage.clusters
                        if self.progress.clusters[c].state is ClusterState.COMPLETED]
            found = await asyncio.gather(*(self._health(c) for c in migrated))
            self.progress.stages[stage.index - 1].soak_checks += 1
            if problems := [f"cluster {c}: {p}" for c, listed in zip(migrated, found,
                                                                      strict=True)
                            for p in listed]:
                return problems
        return []

    async def _health(self, cluster: str) -> list[str]:
        """What the cluster's health check finds wrong (the same check as after each wave;
        flannel is gone or on its way out, so it is not asked about)."""
        spec = self.fleet.spec_of(cluster)
        try:
            report = await run_step(Activity.CHECK_HEALTH, HealthInput(
                cluster=cluster_ref(spec.cluster), cilium_namespace=spec.cilium.namespace,
                cilium_pools=[str(c) for c in spec.network.pod_cidrs], flannel_namespace=None,
                flannel_daemonset=None), HealthReport)
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise  # the fleet is being aborted
            return [f"its health check failed: {describe_failure(error)}"]
        return report.problems

    async def _migrate_cluster(self, name: str, stage: FleetStage,
                               slots: asyncio.Semaphore) -> None:
        record = self.progress.clusters[name]
        async with slots:
            await self._wait_until_clear()  # a halt or a pause holds clusters not yet started
            while True:
                await self._run_cluster(record, stage)
                if record.state is ClusterState.COMPLETED:
                    return
                decision = await self._decision(record)
                if decision is ClusterDecision.SKIP:
                    record.state = ClusterState.SKIPPED
                    return
                await workflow.wait_condition(lambda: not self.progress.paused)

    async def _run_cluster(self, record: FleetClusterProgress, stage: FleetStage) -> None:
        record.state, record.error, record.halted = ClusterState.RUNNING, None, None
        record.attempts += 1
        record.started_at, record.finished_at = workflow.now(), None
        try:
            handle = await workflow.start_child_workflow(
                ClusterMigrationWorkflow.run, MigrationInput(spec=self.fleet.spec_of(record.name)),
                id=record.workflow_id, parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                search_attributes=self._cluster_attributes(record.name, stage))
            record.run_id = handle.first_execution_run_id
            await handle
            record.state = ClusterState.COMPLETED
        except ChildWorkflowError as error:
            cancelled = is_cancelled_exception(error)
            if self.aborting:
                record.state = ClusterState.CANCELLED
                raise
            record.state = ClusterState.CANCELLED if cancelled else ClusterState.FAILED
            record.error = ("its migration was aborted" if cancelled
                            else describe_failure(error))
        except WorkflowAlreadyStartedError:
            record.state = ClusterState.FAILED
            record.error = ("a migration of this cluster is already running outside the fleet; "
                            "let it end (or abort it), then retry")
        finally:
            record.finished_at = workflow.now()
            if record.halted is not None:  # it ended: a decision or nothing holds the fleet
                record.halted = None
                self._update_halt()

    async def _decision(self, record: FleetClusterProgress) -> ClusterDecision:
        """The fleet halts until the operator decides for ``record``'s cluster."""
        record.waiting_for_decision = True
        self._update_halt()
        await workflow.wait_condition(lambda: record.name in self.decisions)
        record.waiting_for_decision = False
        self._update_halt()
        return self.decisions.pop(record.name)

    async def _abort_running_clusters(self) -> None:
        """Each running cluster is cancelled and compensates; the fleet ends after them."""
        self.aborting = True
        for task in self.running:
            task.cancel()
        await workflow.wait_condition(lambda: all(task.done() for task in self.running))
        for task in self.running:
            if not task.cancelled():
                task.exception()  # each ended by the abort; their errors say only that
        for stage in self.progress.stages:
            if stage.state is not StageState.DONE and stage.state is not StageState.PENDING:
                stage.state = StageState.CANCELLED

    # ---- operator messages ----------------------------------------------------------------

    @workflow.update(name=APPROVE_UPDATE)
    def approve(self, request: ApproveRequest) -> str:
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
        return ("paused: no new cluster or stage starts; clusters already running go on "
                "(pause one with `cilium-migrate pause CLUSTER`)")

    @pause.validator
    def _validate_pause(self, request: PauseRequest) -> None:
        if self.progress.paused:
            raise ValueError("the fleet is already paused")
        if self.progress.phase.ended:
            raise ValueError(f"the fleet is {self.progress.phase.value}")

    @workflow.update(name=RESUME_UPDATE)
    def resume(self, request: PauseRequest) -> str:
        """Ends a pause, and a halt for a stage that degraded while soaking (the operator
        mended it: the soak starts again). A failed cluster needs `decide` instead."""
        self.progress.paused = False
        self.soak_trouble = None
        self._update_halt()
        return "resumed" + (f"; still halted: {self.progress.halted}" if self.progress.halted
                            else "")

    @resume.validator
    def _validate_resume(self, request: PauseRequest) -> None:
        if not self.progress.paused and self.soak_trouble is None:
            raise ValueError("the fleet is neither paused nor halted in a soak" + (
                f"; it is halted: {self.progress.halted}" if self.progress.halted else ""))

    @workflow.update(name=DECIDE_UPDATE)
    def decide(self, request: FleetDecideRequest) -> str:
        self.decisions[request.cluster] = request.decision
        return f"cluster {request.cluster}: {request.decision.value}"

    @decide.validator
    def _validate_decide(self, request: FleetDecideRequest) -> None:
        record = self.progress.clusters.get(request.cluster)
        if record is None:
            raise ValueError(f"no cluster {request.cluster!r} in fleet {self.fleet.name}; its "
                             f"clusters: {', '.join(self.progress.clusters)}")
        if not record.waiting_for_decision or request.cluster in self.decisions:
            raise ValueError(f"cluster {request.cluster} is {record.state.value}, not waiting "
                             "for a decision")

    @workflow.signal(name=CLUSTER_HALT_SIGNAL)
    def cluster_halt(self, *args: object) -> None:
        """A running cluster's halt began, changed or ended (workflows/cluster.py). A report
        from a cluster that is not running (a late one, or a stranger's) changes nothing."""
        report = signal_input(ClusterHalt, args, CLUSTER_HALT_SIGNAL, required=("cluster",))
        record = self.progress.clusters.get(report.cluster) if report is not None else None
        if report is None or record is None or record.state is not ClusterState.RUNNING:
            return
        record.halted = report.halted
        self._update_halt()

    @workflow.query(name=PROGRESS_QUERY)
    def get_progress(self) -> FleetProgress:
        return self.progress

    # ---- helpers ---------------------------------------------------------------------------

    def _enter(self, stage: FleetStage, state: StageState) -> None:
        record = self.progress.stages[stage.index - 1]
        record.state = state
        if self.progress.current_stage != stage.index:
            self.progress.current_stage = stage.index
            record.started_at = workflow.now()
            workflow.upsert_search_attributes([STAGE_ATTRIBUTE.value_set(stage.name)])

    def _update_halt(self) -> None:
        """Why nothing new starts: failed clusters waiting for a decision, clusters whose
        own migration halted, or a stage that degraded while soaking; None when nothing holds
        the fleet."""
        clusters = self.progress.clusters.values()
        waiting = [c for c in clusters if c.waiting_for_decision]
        halted = [c for c in clusters if c.halted is not None]
        reasons = []
        if waiting:
            reasons.append("; ".join(f"cluster {c.name} {c.state.value}: {c.error}"
                                     for c in waiting)
                           + ". Decide: `fleet decide FLEET CLUSTER retry|skip`, or abort")
        if halted:
            reasons.append("; ".join(f"cluster {c.name} halted: {c.halted}" for c in halted)
                           + ". Mend it with that cluster's own commands (`cilium-migrate "
                           "status|decide|resume CLUSTER`); the fleet goes on when it does")
        if self.soak_trouble:
            reasons.append(self.soak_trouble + ". Mend it, then `fleet resume FLEET` (the soak "
                           "starts again), or abort")
        self.progress.halted = " | ".join(reasons) or None

    async def _wait_until_clear(self) -> None:
        await workflow.wait_condition(
            lambda: not self.progress.paused and not self.progress.halted)

    def _cluster_attributes(self, cluster: str, stage: FleetStage) -> TypedSearchAttributes:
        """What `cilium-migrate start` gives a cluster's migration, and the fleet's names."""
        return TypedSearchAttributes([
            SearchAttributePair(CLUSTER_ATTRIBUTE, cluster),
            SearchAttributePair(PHASE_ATTRIBUTE, Phase.DISCOVERING.value),
            SearchAttributePair(FLEET_ATTRIBUTE, self.fleet.name),
            SearchAttributePair(STAGE_ATTRIBUTE, stage.name)])
