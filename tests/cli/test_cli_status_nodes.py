"""`status` at scale: nodes that need attention in the default view, node records a page at a
time with --nodes/--wave, and the fallback for a worker that predates the bounded queries."""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.cli.conftest import Cli, Migrations
from workflows.identity import CLUSTER_WORKFLOW, PROGRESS_QUERY, cluster_workflow_id
from workflows.progress import NodeProgress, NodeState, Phase, Progress, WaveProgress
from workflows.progress_summary import NodesPage, ProgressSummary


async def test_status_shows_the_blocked_node_and_pages_through_nodes(
        cli: Cli, migrations: Migrations, fake: Any) -> None:
    name = migrations.name()
    fake.drain_blocked.add("worker-1")  # the canary: the run stands still until a decision
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))
    full = await migrations.until(name, lambda p: p.nodes and
                                  p.nodes["worker-1"].state is NodeState.BLOCKED, "the block")

    table, blocked, wave_2, sliced, as_json = [await cli("status", name, *flags) for flags in (
        (), ("--nodes", "blocked"), ("--wave", "2"), ("--nodes", "all", "--offset", "1",
                                                      "--limit", "1"),
        ("--nodes", "pending,blocked", "-o", "json"))]

    for result in (table, blocked, wave_2, sliced, as_json):
        assert result.code == 0, result
    lines = table.out.splitlines()
    assert "Current wave 1 (canary, zone zone-a): running; 1 blocked" in lines
    assert any(line.startswith("Node worker-1 waits for a decision: drain: pod t/db-0")
               for line in lines)
    assert f"  decide with: cilium-migrate decide {name} worker-1 retry|rollback|skip" in lines

    def rows(out: str) -> list[list[str]]:
        return [line.split()[:3] for line in out.splitlines()
                if line.startswith(("worker-", "cp-"))]

    assert rows(blocked.out) == [["worker-1", "1", "blocked"]]
    assert blocked.out.splitlines()[-1] == "Nodes blocked: 1-1 of 1"
    assert rows(wave_2.out) == [["worker-2", "2", "pending"]]
    assert rows(sliced.out) == [["worker-2", "2", "pending"]]
    assert sliced.out.splitlines()[-1] == "Nodes in all: 2-2 of 3"
    page = NodesPage.model_validate(json.loads(as_json.out))
    assert page.total == 3
    assert page.nodes == sorted(full.nodes.values(), key=lambda n: (n.wave, n.name))


async def test_status_refuses_bad_node_filters_in_one_line(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates, "a gate")

    no_wave, bad_state, bad_offset, stray_limit = [await cli("status", name, *flags)
                                                   for flags in (
        ("--wave", "99"), ("--nodes", "stuck"), ("--wave", "1", "--offset", "-2"),
        ("--limit", "5"))]

    assert no_wave.code == 1 and no_wave.err == (
        f"error: no wave 99 in the migration of cluster {name} (waves 1-3)\n"), no_wave
    assert bad_state.code == 1 and "no node state 'stuck'; use all or any of pending" in (
        bad_state.err), bad_state
    assert bad_offset.code == 1 and "-2 is negative" in bad_offset.err, bad_offset
    assert stray_limit.code == 1 and stray_limit.err == (
        "error: --offset and --limit page through --nodes or --wave\n"), stray_limit
    for result in (no_wave, bad_state, bad_offset, stray_limit):
        assert "Traceback" not in result.err


OLD_PROGRESS = Progress(cluster="old", phase=Phase.MIGRATING, waves=[
    WaveProgress(index=1, kind="canary", nodes=["worker-1"], state="running")],
    nodes={"worker-1": NodeProgress(name="worker-1", wave=1, state=NodeState.BLOCKED,
                                    blocker="drain: pod t/db-0 blocked by PDB t/db-pdb")})


@workflow.defn(name=CLUSTER_WORKFLOW)
class WorkerBeforeSummaries:
    """A worker of a version before `progress_summary`: it answers only `progress`."""

    @workflow.run
    async def run(self, cluster: str) -> None:
        self.progress = OLD_PROGRESS.model_copy(update={"cluster": cluster})
        await workflow.wait_condition(lambda: False)

    @workflow.query(name=PROGRESS_QUERY)
    def get_progress(self) -> Progress:
        return self.progress


async def test_a_worker_without_the_summary_query_gets_the_full_progress_and_a_note(
        cli: Cli, migrations: Migrations, temporal_env: Any) -> None:
    name = migrations.name()
    queue = f"old-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    # Unsandboxed: the sandbox would re-import this test module and its fixtures.
    async with Worker(client, task_queue=queue, workflows=[WorkerBeforeSummaries],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        await client.start_workflow(WorkerBeforeSummaries.run, name,
                                    id=cluster_workflow_id(name), task_queue=queue)
        table, as_json = [await cli("status", name, *flags) for flags in ((), ("-o", "json"))]

    for result in (table, as_json):
        assert result.code == 0, result
        assert result.err.startswith("note: this run's worker predates the progress_summary "
                                     "query, so status read the run's full progress"), result
    assert "Node worker-1 waits for a decision: drain: pod t/db-0 blocked by PDB t/db-pdb" in (
        table.out.splitlines())
    summary = ProgressSummary.model_validate(json.loads(as_json.out))
    assert (summary.cluster, summary.counts) == (name, {"blocked": 1})
    assert [n.name for n in summary.attention.items] == ["worker-1"]
