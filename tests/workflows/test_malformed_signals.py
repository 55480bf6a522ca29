"""Signals with malformed payloads, sent to a running migration from outside (Temporal does not
validate a signal's payload): each is dropped and logged, the run goes on as if it had not come,
and no workflow task fails (a failing one is retried forever and holds the run)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.common import RawValue

from tests.fakes import FakeCluster
from tests.workflows.support import spec, start, until
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import (
    DECIDE_SIGNAL,
    NODE_REPORT_SIGNAL,
    PROGRESS_QUERY,
    node_workflow_id,
)
from workflows.messages import DecideRequest, Decision
from workflows.progress import NodeProgress, NodeState, Phase

# The arguments of each malformed signal: every one is sent to both signals.
MALFORMED: list[list[Any]] = [
    [None],
    ["retry"],
    [42],
    [["worker-1", "retry"]],
    [{}],
    [{"node": "worker-1", "decision": "explode"}],
    [{"name": "worker-1"}],
    [{"name": "worker-1", "wave": "first"}],
    [{"name": "worker-1", "wave": 1, "garbage": True}],  # no state: no report
    [{"node": "worker-1", "decision": "retry", "garbage": True}],
    [b"\x00\xff"],
    [],
    [{"node": "worker-1", "decision": "retry"}, "extra"],
    [RawValue(Payload(metadata={"encoding": b"application/x-unknown"}, data=b"?"))],
    [RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json"))],
]


@pytest.fixture
def task_queue() -> str:
    return f"sig-{uuid.uuid4().hex[:8]}"


async def test_malformed_signals_are_dropped_logged_and_change_nothing(
        temporal_env: Any, task_queue: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    fake = FakeCluster(workers=2)
    fake.drain_blocked.add("worker-1")
    migration = spec(f"signals-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked node")
        node = temporal_env.client.get_workflow_handle(node_workflow_id(handle.id, "worker-1"))

        for args in MALFORMED:
            await node.signal(DECIDE_SIGNAL, args=args)
            await handle.signal(NODE_REPORT_SIGNAL, args=args)
        # A query is answered after the signals before it: the run has seen them all.
        after = await until(handle, lambda p: True, "an answer")
        node_after = await node.query(PROGRESS_QUERY, result_type=NodeProgress)

        assert after.nodes["worker-1"] == blocked.nodes["worker-1"]
        assert node_after.state is NodeState.BLOCKED and node_after.blocker
        fake.drain_blocked.clear()
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-1", decision=Decision.RETRY))
        report = await handle.result()

    assert report.phase is Phase.COMPLETED
    assert report.nodes["worker-1"].state is NodeState.MIGRATED
    assert fake.calls[("drain", "worker-1")] == 2  # the one retry the update asked for
    for each in (handle, node):
        events = [event.event_type async for event in each.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in events
        assert events.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) >= len(MALFORMED)
    ours = [r.getMessage() for r in caplog.records if r.name == "temporalio.workflow"]
    sdk = [r.getMessage() for r in caplog.records if "dropping the signal" in r.getMessage()]
    for signal in (DECIDE_SIGNAL, NODE_REPORT_SIGNAL):
        # The handlers log each one they drop (workflow.logger); the last two payloads do not
        # decode at all, and the SDK drops and logs those before any handler runs.
        assert sum(m.startswith(f"signal {signal!r} dropped: ") for m in ours) == len(
            MALFORMED) - 2, ours
        assert sum(f"signal input for {signal} " in m for m in sdk) >= 2, sdk
