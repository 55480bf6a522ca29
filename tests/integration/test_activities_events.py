"""Node steps leave Kubernetes Events on the node, so `kubectl describe node` tells what the
migration did to it. (An event that cannot be written: tests/unit/test_activities_events.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import CORDONED_BY_ANNOTATION, NodeRef
from plan.policies import ClusterRef
from tests.conftest import Sandbox

CLUSTER = ClusterRef(name="sandbox")


@pytest.fixture
def node(sandbox: Sandbox) -> Iterator[str]:
    name = sandbox.claim_worker()
    yield name
    sandbox.kube.patch(f"/api/v1/nodes/{name}", {
        "metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}},
        "spec": {"unschedulable": None}})


def node_events(sandbox: Sandbox, node: str) -> list[dict[str, Any]]:
    """What `kubectl describe node` finds: events about the Node, in any namespace."""
    found: list[dict[str, Any]] = sandbox.kube.get(
        "/api/v1/events",
        fieldSelector=f"involvedObject.kind=Node,involvedObject.name={node}")["items"]
    return found


@pytest.mark.sandbox
def test_cordon_and_uncordon_are_recorded_as_events_on_the_node(
        sandbox: Sandbox, node: str) -> None:
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))
    env = ActivityEnvironment()
    target = NodeRef(cluster=CLUSTER, node=node,
                     migration_id=f"cilium-migrate/{uuid.uuid4().hex[:8]}")
    uid = sandbox.kube.get(f"/api/v1/nodes/{node}")["metadata"]["uid"]

    assert env.run(steps.cordon_node, target).cordoned_by_us
    assert env.run(steps.cordon_node, target).cordoned_by_us  # nothing to do: no second event
    assert env.run(steps.uncordon_node, target) is True

    ours = sorted((e for e in node_events(sandbox, node) if target.migration_id in e["message"]),
                  key=lambda e: e["eventTime"])
    assert [e["reason"] for e in ours] == ["CiliumMigrateCordoned", "CiliumMigrateUncordoned"]
    for event in ours:
        assert event["involvedObject"]["kind"] == "Node"
        assert event["involvedObject"]["name"] == node
        assert event["involvedObject"]["uid"] == uid
        assert event["type"] == "Normal"
        assert event["source"]["component"] == "cilium-migrate"
        assert event["reportingComponent"] == "cilium-migrate"
        assert event["count"] == 1 and event["action"]
        assert event["metadata"]["namespace"] == "default"
