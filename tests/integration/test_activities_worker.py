"""The activities as the worker hosts them: every `Activity` name registered, inputs and
results crossing a real Temporal server through the pydantic converter, typed failures arriving
in the workflow."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.context import WORKER_NODE_ENV, ActivityContext
from activities.registry import activities
from plan.contract import Activity, NodeRef, NodeSnapshot, SnapshotInput
from plan.facts import ClusterFacts
from plan.policies import ClusterRef, RebootPolicy
from tests.conftest import Sandbox

pytestmark = pytest.mark.sandbox


@workflow.defn(name="ActivitiesSmoke", sandboxed=False)
class SmokeWorkflow:
    """Calls a few activities by name, as the migration workflows do."""

    @workflow.run
    async def run(self, target: NodeRef) -> dict[str, Any]:
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30),
                                   "retry_policy": RetryPolicy(maximum_attempts=3)}
        facts = await workflow.execute_activity(Activity.DISCOVER, target.cluster,
                                                result_type=ClusterFacts, **options)
        reboot = RebootPolicy(strategy="node-shell", timeout_seconds=60, image="busybox:1.36")
        snapshot = await workflow.execute_activity(
            Activity.SNAPSHOT_NODE, SnapshotInput(target=target, reboot=reboot),
            result_type=NodeSnapshot, **options)
        try:
            await workflow.execute_activity(
                Activity.SNAPSHOT_NODE, SnapshotInput(target=target.model_copy(
                    update={"node": "no-such-node"}), reboot=reboot),
                result_type=NodeSnapshot, **options)
            gone = None
        except ActivityError as error:
            assert isinstance(error.cause, ApplicationError)
            gone = error.cause.type
        return {"worker_node": facts.worker_node, "nodes": len(facts.nodes),
                "boot_id": snapshot.boot_id, "missing": gone}


def test_every_activity_name_is_registered(sandbox: Sandbox) -> None:
    context = ActivityContext(default_kubeconfig=str(sandbox.kubeconfig))
    registered = {_name(a) for a in activities(context)}
    expected = {value for key, value in vars(Activity).items() if key.isupper()}
    assert registered == expected


def _name(function: Any) -> str:
    definition = getattr(function, "__temporal_activity_definition")
    return str(definition.name)


async def test_activities_run_through_a_worker_and_fail_typed(
        sandbox: Sandbox, temporal_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_NODE_ENV, "worker-1")
    context = ActivityContext(default_kubeconfig=str(sandbox.kubeconfig))
    queue = f"activities-{uuid.uuid4().hex[:8]}"
    node = sandbox.workers()[0]
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(temporal_env.client, task_queue=queue, workflows=[SmokeWorkflow],
                          activities=activities(context), activity_executor=executor):
            result = await temporal_env.client.execute_workflow(
                SmokeWorkflow.run, NodeRef(cluster=ClusterRef(name="sandbox"), node=node,
                                           migration_id="smoke"),
                id=f"smoke-{queue}", task_queue=queue)
    assert result["worker_node"] == "worker-1"
    assert result["nodes"] == len(sandbox.topology.nodes)
    assert result["boot_id"] == sandbox.kube.get(
        f"/api/v1/nodes/{node}")["status"]["nodeInfo"]["bootID"]
    assert result["missing"] == "NodeGone"
