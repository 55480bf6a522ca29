"""The `progress_summary` and `nodes_page` queries on a real server agree with `progress`."""

from __future__ import annotations

import uuid
from typing import Any

from tests.fakes import FakeCluster
from tests.workflows.support import spec, start, until
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.progress import NodeState
from workflows.progress_summary import PAGE_LIMIT, NodesPageRequest, summarize


async def test_summary_and_pages_agree_with_the_full_progress(temporal_env: Any) -> None:
    task_queue = f"wf-{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(workers=6)
    fake.drain_blocked.add("worker-1")  # the canary: the run stands still until a decision
    migration = spec(f"queries-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        full = await until(handle, lambda p: p.nodes and
                           p.nodes["worker-1"].state is NodeState.BLOCKED, "the blocked canary")

        summary = await handle.query(ClusterMigrationWorkflow.get_summary)
        pages = [await handle.query(ClusterMigrationWorkflow.get_nodes_page,
                                    NodesPageRequest(offset=offset, limit=3))
                 for offset in (0, 3, 6)]
        blocked = await handle.query(ClusterMigrationWorkflow.get_nodes_page,
                                     NodesPageRequest(states=[NodeState.BLOCKED]))
        wave_2 = await handle.query(ClusterMigrationWorkflow.get_nodes_page,
                                    NodesPageRequest(wave=2))
        capped = await handle.query(ClusterMigrationWorkflow.get_nodes_page,
                                    NodesPageRequest(limit=PAGE_LIMIT * 4))
        await handle.cancel()

    assert summary == summarize(full)
    assert summary.counts == full.counts() == {"blocked": 1, "pending": 6}
    assert summary.current_wave is not None
    assert (summary.current_wave.index, summary.current_wave.kind) == (1, "canary")
    assert summary.current_wave.counts == {"blocked": 1}
    assert [n.name for n in summary.attention.items] == ["worker-1"]
    assert summary.attention.items[0] == full.nodes["worker-1"]
    assert [(r.first, r.last, r.state) for r in summary.waves] == [
        (1, 1, "running"), (2, 4, "pending"), (5, 5, "pending")]

    in_order = sorted(full.nodes.values(), key=lambda n: (n.wave, n.name))
    assert [n for page in pages for n in page.nodes] == in_order
    assert [len(page.nodes) for page in pages] == [3, 3, 1]
    assert {page.total for page in pages} == {7}
    assert [n.name for n in blocked.nodes] == ["worker-1"] and blocked.total == 1
    assert wave_2.nodes == [full.nodes[name] for name in sorted(full.waves[1].nodes)]
    assert capped.limit == PAGE_LIMIT and capped.total == 7
