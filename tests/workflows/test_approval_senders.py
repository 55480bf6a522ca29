"""Who approved: each approval carries the ID of its Update, and `status` finds in history the
identity of the client connection that sent it, beside the name the approver claimed, across
every run of a migration that continued as new."""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from client import migrations, status_queries
from client.approval_senders import (
    AcceptedApproval,
    ApprovalSenders,
    accepted_approval,
    sender_of,
)
from client.history_runs import fetch_runs
from client.status_view import render_summary
from tests.fakes import FakeCluster
from tests.workflows.support import HISTORIES, progress, spec, start_with
from worker.build import build_worker, connect
from workflows.cluster import ClusterMigrationWorkflow
from workflows.messages import ApproveRequest
from workflows.progress import Approval, Phase

CAROL = "carol@ops-laptop cilium-migrate"
BOT = "deploy-bot@ci-runner-7"
GATES = ["install", "wave-1", "wave-2", "wave-3", "wave-4", "finalize", "remove-flannel"]


async def client_named(env: Any, identity: str) -> Client:
    return await connect(env.client.service_client.config.target_host,
                         env.client.namespace, identity=identity)


async def test_status_shows_the_sending_client_beside_the_claimed_approver(
        temporal_env: Any) -> None:
    task_queue = f"who-{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(workers=4)  # waves: worker-1 (canary), worker-2+3, worker-4, cp-1
    migration = spec(f"who-{task_queue}", rollout={"maxUnavailable": 2},
                     approvals={"policy": "per-wave", "approvers": ["alice"]})
    # Both claim to be alice, which the allowlist accepts; only the connections differ.
    sender = {gate: (CAROL if i % 2 == 0 else BOT) for i, gate in enumerate(GATES)}
    clients = {CAROL: await client_named(temporal_env, CAROL),
               BOT: await client_named(temporal_env, BOT)}
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        # Continues as new after every wave: early approvals live in earlier runs' histories.
        handle = await start_with(temporal_env, migration, task_queue, continue_as_new_at=1)
        midway = None
        while not (current := await progress(handle)).phase.ended:
            for gate in current.pending_gates:
                if gate == "finalize" and midway is None:
                    midway = await status_approvals(temporal_env.client, migration.cluster.name)
                theirs = clients[sender[gate]].get_workflow_handle_for(
                    ClusterMigrationWorkflow.run, handle.id)  # type: ignore[arg-type]
                await theirs.execute_update(
                    ClusterMigrationWorkflow.approve, ApproveRequest(gate=gate, approver="alice"),
                    id=f"approve/{gate}/alice")
        runs = await fetch_runs(temporal_env.client, handle.id)
        final = await status_approvals(temporal_env.client, migration.cluster.name)

    assert current.phase is Phase.COMPLETED
    assert len(runs) >= 3, [len(run.events) for run in runs]
    # install was accepted in the first run's history, not in the last one's.
    assert "approve/install/alice" in await accepted_ids(runs[0])
    assert "approve/install/alice" not in await accepted_ids(runs[-1])

    expected = [(gate, "alice", f"approve/{gate}/alice", sender[gate]) for gate in GATES]
    assert [(a.gate, a.approver, a.update_id, a.client_identity) for a in final] == expected
    assert midway is not None
    assert [(a.gate, a.client_identity) for a in midway] == [
        (gate, sender[gate]) for gate in GATES[:5]]

    # The table shows both names on the approval's line.
    summary = (await status_queries.read_summary(
        temporal_env.client, await migrations.find(temporal_env.client,
                                                   migration.cluster.name))).summary
    summary.approvals.items = final
    lines = render_summary(summary).splitlines()
    row = {line.split()[0]: line.split() for line in lines[lines.index("Approvals:") + 1:]}
    assert row["install"][:4] == ["install", "alice", "carol@ops-laptop", "cilium-migrate"]
    assert row["wave-1"][:3] == ["wave-1", "alice", BOT]


async def status_approvals(client: Client, cluster: str) -> list[Approval]:
    """The approvals as `status` shows them: the run's summary, senders filled in."""
    migration = await migrations.find(client, cluster)
    reading = await status_queries.read_summary(client, migration)
    return await ApprovalSenders(client).fill(
        migration.handle.id, migration.description.run_id, reading.summary.approvals.items)


async def accepted_ids(run: WorkflowHistory) -> list[str]:
    found = [await accepted_approval(e, pydantic_data_converter) for e in run.events]
    return [a.update_id for a in found if a]


async def test_approvals_recorded_before_the_update_id_find_their_sender_by_gate() -> None:
    """A recorded history from before approvals kept their Update's ID: each gate was approved
    once, so the gate finds the accepted event and its identity."""
    saved = json.loads((HISTORIES / "before-wave-workflow__cilium-migrate__happy.json").read_text())
    history = WorkflowHistory.from_json(saved["workflow_id"], saved["history"])
    accepted = [a for e in history.events
                if (a := await accepted_approval(e, pydantic_data_converter))]
    assert [a.gate for a in accepted][:2] == ["install", "wave-1"]
    assert {a.identity for a in accepted} == {"10045@vm"}  # the SDK's default, pid@host

    old = Approval(gate="wave-1", approver="alice", at=history.events[0].event_time.ToDatetime())
    assert sender_of(old, accepted) == next(a for a in accepted if a.gate == "wave-1")
    # An approval that names its Update matches only that Update.
    other = old.model_copy(update={"update_id": "approve/wave-1/someone-else"})
    assert sender_of(other, accepted) is None
    assert sender_of(old, [AcceptedApproval("x", "finalize", "h")]) is None
