"""WaveMigration: one wave's nodes, each a NodeMigration child, between the cluster and its nodes.

A child costs its parent's history three events (initiated, started, completed) and, since the
nodes of a wave finish at different times, about one workflow task (three more) each: some six
events per node, past the budget of five for the cluster's history. So the cluster starts one
WaveMigration per wave, which costs it a few events per wave, and each wave's own history holds
its nodes' child events (a wave is at most maxUnavailable nodes; a wave of more than
WAVE_PART_NODES runs as several WaveMigrations, each given a part of its nodes).

The nodes stay the cluster's: each keeps its ID under the cluster's (`node_workflow_id`), reports
to the cluster when it is blocked and hears the operator's decision from the cluster, by that ID.
The wave only starts its nodes together, waits for every one, and returns what the cluster keeps
of each. A node's failure is that node's record (FAILED, with why), not the wave's. Cancelling
the wave (an abort of the cluster) cancels every node, each undoing what it did, and the wave
still returns every record, so the cluster learns which nodes had finished before the abort.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, FailureError, is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from workflows.identity import WAVE_WORKFLOW, node_workflow_id
    from workflows.messages import NodeMigrationInput, WaveMigrationInput
    from workflows.node import NodeMigrationWorkflow
    from workflows.progress import NodeProgress, NodeState, WaveResult
    from workflows.steps import describe_failure


@workflow.defn(name=WAVE_WORKFLOW)
class WaveMigrationWorkflow:
    def __init__(self) -> None:
        self._started: set[str] = set()  # nodes whose workflow has started
        self._cancelling = False  # the wave was cancelled: every node is to be

    @workflow.run
    async def run(self, input: WaveMigrationInput) -> WaveResult:
        nodes = [asyncio.create_task(self._migrate_node(input, node)) for node in input.nodes]
        try:
            await workflow.wait(nodes)
        except asyncio.CancelledError:
            # The workflow's cancellation reaches only this task. The node tasks are not
            # cancelled: one whose node has just finished would take the cancellation for its
            # result and report a migrated node as cancelled. Each node workflow is asked to
            # cancel instead, and each task reports how its node really ended.
            self._cancelling = True
            await asyncio.gather(*(self._cancel(input, node) for node in sorted(self._started)))
            await workflow.wait(nodes)
        return WaveResult(nodes=[task.result() for task in nodes])

    async def _migrate_node(self, input: WaveMigrationInput, node: str) -> NodeProgress:
        if self._cancelling:  # the wave was cancelled before this node started
            return NodeProgress(name=node, wave=input.wave, state=NodeState.CANCELLED)
        handle = await workflow.start_child_workflow(
            NodeMigrationWorkflow.run, NodeMigrationInput(
                cluster=input.cluster, node=node, wave=input.wave,
                migration_id=input.migration_id, policies=input.policies),
            id=node_workflow_id(input.migration_id, node),
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        self._started.add(node)
        if self._cancelling:  # cancelled while this node was starting
            await self._cancel(input, node)
        try:
            result = await handle
        except ChildWorkflowError as error:
            if is_cancelled_exception(error):
                return NodeProgress(name=node, wave=input.wave, state=NodeState.CANCELLED)
            return NodeProgress(name=node, wave=input.wave, state=NodeState.FAILED,
                                error=describe_failure(error))
        return result.kept(input.fold_migrated)

    async def _cancel(self, input: WaveMigrationInput, node: str) -> None:
        """Asks the node's workflow to cancel (it undoes what it did); one that has ended
        meanwhile refuses, and its result says how it ended."""
        with contextlib.suppress(FailureError):
            await workflow.get_external_workflow_handle(
                node_workflow_id(input.migration_id, node)).cancel()
