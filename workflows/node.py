"""NodeMigration: one node moves from flannel to Cilium (procedure, Phase 3).

The run method reads like the procedure. When a step fails in a way only a human can judge
(a drain blocked by a PDB, a failed verification, a reboot that does not come back), the node
stays as it is, the parent hears why, and this workflow waits for the operator's decision:
retry the step, roll the node back to flannel, or skip it. Aborting (cancellation) uncordons the
node if, and only if, this run cordoned it.

The parent hears from the node only when it is blocked (and at the end, from its result): each
signal costs the parent's history several events, and thousands of nodes share that history.
The node's current step is this workflow's `progress` query, which `status` asks.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from plan.contract import (
        Activity,
        AgentStatus,
        CheckResult,
        CordonResult,
        DrainBlocker,
        DrainInput,
        DrainResult,
        LabelInput,
        NodeRef,
        NodeSnapshot,
        NodeStep,
        RebootInput,
        RebootResult,
        RestartAgentInput,
        SnapshotInput,
        StepError,
        VerifyInput,
        VerifyResult,
    )
    from plan.rollback import RollbackAction, restore_flannel_config, rollback_actions
    from workflows.identity import (
        DECIDE_SIGNAL,
        NODE_REPORT_SIGNAL,
        NODE_WORKFLOW,
        PROGRESS_QUERY,
    )
    from workflows.messages import DecideRequest, Decision, NodeMigrationInput
    from workflows.progress import NodeProgress, NodeState
    from workflows.signal_inputs import signal_input
    from workflows.steps import describe_failure, run_step, step_failure

T = TypeVar("T")
AGENT_RESTART_TIMEOUT = 300.0
# Runs recorded before the node stopped reporting each step, and its end, to the parent.
REPORT_ONLY_BLOCKED_PATCH = "report-only-when-blocked"
HOST_COMMAND_TIMEOUT = 180.0


class _Stop(Exception):
    """The operator decided to skip or roll back instead of retrying."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.value)
        self.decision = decision


@workflow.defn(name=NODE_WORKFLOW)
class NodeMigrationWorkflow:
    def __init__(self) -> None:
        self._decision: Decision | None = None
        self._input: NodeMigrationInput | None = None
        self._node: NodeProgress | None = None
        self._rolling_back = False

    @workflow.signal(name=DECIDE_SIGNAL)
    def decide(self, *args: object) -> None:
        """The parent's DecideRequest; anything else is dropped (workflows/signal_inputs.py)."""
        request = signal_input(DecideRequest, args, DECIDE_SIGNAL)
        if request is not None:
            self._decision = request.decision

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> NodeProgress | None:
        return self._node

    @workflow.run
    async def run(self, input: NodeMigrationInput) -> NodeProgress:
        self._input = input
        node = self._node = NodeProgress(name=input.node, wave=input.wave,
                                         state=NodeState.RUNNING, started_at=workflow.now())
        try:
            node.state = await self._migrate_or_as_decided(input, node)
        except (asyncio.CancelledError, ActivityError) as error:
            if isinstance(error, ActivityError) and not is_cancelled_exception(error):
                raise
            await self._compensate(node)
            raise asyncio.CancelledError() from error
        node.blocker, node.step = None, NodeStep.DONE
        node.finished_at = workflow.now()
        if not workflow.patched(REPORT_ONLY_BLOCKED_PATCH):
            await self._report()  # the parent reads the result
        return node

    async def _migrate_or_as_decided(self, input: NodeMigrationInput,
                                     node: NodeProgress) -> NodeState:
        """Migrates the node, unless the operator decides to roll it back or skip it."""
        try:
            try:
                await self._migrate(input, node)
                return NodeState.MIGRATED
            except _Stop as stop:
                if stop.decision is not Decision.ROLLBACK:
                    raise
                await self._roll_back(input, node, failed_at=node.step)
                return NodeState.ROLLED_BACK
        except _Stop:  # skipped, possibly while rolling back
            await self._leave_as_is(node)
            return NodeState.SKIPPED

    async def _migrate(self, input: NodeMigrationInput, node: NodeProgress) -> None:
        target, policies = self._target(), input.policies
        snapshot = await self._step(NodeStep.SNAPSHOT, Activity.SNAPSHOT_NODE,
                                    SnapshotInput(target=target, reboot=policies.reboot),
                                    NodeSnapshot)
        node.boot_id_before = snapshot.boot_id
        cordon = await self._step(NodeStep.CORDON, Activity.CORDON_NODE, target, CordonResult)
        node.cordoned_by_us = cordon.cordoned_by_us
        await self._step(NodeStep.DRAIN, Activity.DRAIN_NODE,
                         DrainInput(target=target, policy=policies.drain), DrainResult,
                         timeout=policies.drain.timeout_seconds)
        await self._step(NodeStep.LABEL, Activity.LABEL_NODE, LabelInput(target=target), type(None))
        await self._restart_agent(NodeStep.RESTART_AGENT)
        reboot = await self._reboot(snapshot)
        node.boot_id_after = reboot.boot_id_after
        verify = await self._verify(expect="cilium")
        node.verify = verify.checks
        await self._uncordon(node)

    async def _roll_back(self, input: NodeMigrationInput, node: NodeProgress,
                         failed_at: NodeStep | None) -> None:
        """Back to flannel, undoing what `plan.rollback` says the failed step calls for."""
        node.state = NodeState.ROLLING_BACK
        self._rolling_back = True
        target, policies = self._target(), input.policies
        for action in rollback_actions(failed_at):
            if action is RollbackAction.DRAIN:
                await self._step(NodeStep.ROLLBACK, Activity.DRAIN_NODE,
                                 DrainInput(target=target, policy=policies.drain), DrainResult,
                                 timeout=policies.drain.timeout_seconds)
            elif action is RollbackAction.UNLABEL:
                await self._step(NodeStep.ROLLBACK, Activity.LABEL_NODE,
                                 LabelInput(target=target, value=None), type(None))
            elif action is RollbackAction.RESTART_AGENT:
                await self._restart_agent(NodeStep.ROLLBACK)
            elif action is RollbackAction.RESTORE_FLANNEL_CONFIG:
                await self._step(NodeStep.ROLLBACK, Activity.RUN_HOST_COMMAND,
                                 restore_flannel_config(target, policies.reboot.image),
                                 type(None), timeout=HOST_COMMAND_TIMEOUT)
            elif action is RollbackAction.REBOOT:
                snapshot = await self._step(
                    NodeStep.ROLLBACK, Activity.SNAPSHOT_NODE,
                    SnapshotInput(target=target, reboot=input.policies.reboot), NodeSnapshot)
                node.boot_id_after = (await self._reboot(snapshot)).boot_id_after
            elif action is RollbackAction.VERIFY_ON_FLANNEL:
                node.verify = (await self._verify(expect="flannel")).checks
            elif action is RollbackAction.UNCORDON:
                await self._uncordon(node)

    async def _leave_as_is(self, node: NodeProgress) -> None:
        """The operator skipped the node: no label is left behind for a later agent restart
        to act on silently, and the node is schedulable again if this run cordoned it."""
        await self._step(NodeStep.ROLLBACK, Activity.LABEL_NODE,
                         LabelInput(target=self._target(), value=None), type(None))
        await self._uncordon(node)

    async def _restart_agent(self, step: NodeStep) -> AgentStatus:
        input = self._input
        assert input is not None
        return await self._step(step, Activity.RESTART_AGENT, RestartAgentInput(
            target=self._target(), namespace=input.policies.overlays.cilium_namespace,
            timeout_seconds=AGENT_RESTART_TIMEOUT, not_before=workflow.now()), AgentStatus,
            timeout=AGENT_RESTART_TIMEOUT)

    async def _reboot(self, before: NodeSnapshot) -> RebootResult:
        input = self._input
        assert input is not None
        policy = input.policies.reboot
        return await self._step(NodeStep.REBOOT, Activity.REBOOT_NODE, RebootInput(
            target=self._target(), policy=policy, before=before,
            cilium_namespace=input.policies.overlays.cilium_namespace,
        ), RebootResult, timeout=policy.timeout_seconds)

    async def _verify(self, expect: Literal["cilium", "flannel"]) -> VerifyResult:
        input = self._input
        assert input is not None
        policy = input.policies.verify
        return await self._step(NodeStep.VERIFY, Activity.VERIFY_NODE, VerifyInput(
            target=self._target(), policy=policy, overlays=input.policies.overlays,
            expect=expect,
        ), VerifyResult, timeout=policy.timeout_seconds)

    async def _uncordon(self, node: NodeProgress) -> None:
        if node.cordoned_by_us:
            await self._step(NodeStep.UNCORDON, Activity.UNCORDON_NODE, self._target(), bool)

    async def _compensate(self, node: NodeProgress) -> None:
        """After an abort: no migration label left for a later agent restart to act on, and
        nothing cordoned that this run cordoned."""
        node.state = NodeState.CANCELLED
        node.finished_at = workflow.now()
        await run_step(Activity.LABEL_NODE, LabelInput(target=self._target(), value=None),
                       type(None))
        if node.cordoned_by_us:
            await run_step(Activity.UNCORDON_NODE, self._target(), bool)

    async def _step(self, step: NodeStep, activity: str, argument: Any, result_type: type[T],
                    timeout: float = 60.0) -> T:
        """Runs a step; on a typed failure, reports the blocker and waits for a decision."""
        node = self._node
        assert node is not None
        long = timeout > 60.0
        while True:
            if node.step != step:
                node.step = step
                if not workflow.patched(REPORT_ONLY_BLOCKED_PATCH):
                    await self._report()  # the `progress` query shows the step
            try:
                return await run_step(activity, argument, result_type,
                                      timeout=timedelta(seconds=timeout), long=long)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_cancelled_exception(error):
                    raise
                failure = step_failure(error)
                if failure is None and not isinstance(error, ApplicationError):
                    failure = ApplicationError(describe_failure(error), type="StepFailed")
                assert failure is not None
                decision = await self._blocked(step, failure)
                # Asked to roll back while rolling back: the failed rollback step runs again.
                if decision is Decision.RETRY or (
                        self._rolling_back and decision is Decision.ROLLBACK):
                    continue
                raise _Stop(decision) from error

    async def _blocked(self, step: NodeStep, failure: ApplicationError) -> Decision:
        node = self._node
        assert node is not None
        node.state = NodeState.BLOCKED
        node.blocker = f"{step.value}: {failure.message}"
        details = list(failure.details) if failure.details else []
        if failure.type == StepError.DRAIN_BLOCKED and details and isinstance(details[0], list):
            node.blockers = [DrainBlocker.model_validate(b) for b in details[0]]
        if (failure.type == StepError.VERIFICATION_FAILED and details
                and isinstance(details[0], dict)):
            node.verify = [CheckResult.model_validate(c) for c in details[0].get("checks", [])]
        await self._report()
        self._decision = None
        await workflow.wait_condition(lambda: self._decision is not None)
        decision = self._decision
        assert decision is not None
        node.state, node.blocker, node.blockers = NodeState.RUNNING, None, []
        return decision

    async def _report(self) -> None:
        """Sends the parent this node's progress: it waits for a decision."""
        input, node = self._input, self._node
        assert input is not None and node is not None
        await workflow.get_external_workflow_handle(input.migration_id).signal(
            NODE_REPORT_SIGNAL, node)

    def _target(self) -> NodeRef:
        input = self._input
        assert input is not None
        return NodeRef(cluster=input.cluster, node=input.node, migration_id=input.migration_id)
