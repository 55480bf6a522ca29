"""History sizes of a large migration on fake activities: events per node in the parent, in
each wave workflow and in each node workflow, the longest single history, the carried state's
and the largest wave result's sizes, wall time.

    .venv/bin/python bench/history_bench.py [--nodes 5000] [--max-unavailable 50]

Figures, not assertions (tests/workflows/test_history_budget.py asserts the budget for 60
nodes). A Temporal dev server and one worker run in this process; the activities are
tests/fakes.py's, so the time is Temporal's and the workflows', not a cluster's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers


from client.history_runs import fetch_runs  # noqa: E402
from tests.conftest import local_temporal  # noqa: E402
from tests.fakes import LARGE_CILIUM_POOL, FakeCluster  # noqa: E402
from tests.workflows.support import (  # noqa: E402
    HistorySizes,
    history_sizes,
    spec,
    start_with,
    wave_histories,
)
from worker.build import build_worker  # noqa: E402
from workflows.continuation import DEFAULT_CONTINUE_AS_NEW_AT  # noqa: E402
from workflows.progress import Phase  # noqa: E402

HARD_LIMIT = 51_200


async def main(nodes: int, max_unavailable: int, continue_as_new_at: int) -> None:
    env = await local_temporal("--log-level", "error")
    try:
        fake = FakeCluster(workers=nodes - 1)
        task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        migration = spec(f"bench-{task_queue}", approvals={"policy": "none"},
                         rollout={"maxUnavailable": max_unavailable},
                         network={"podCIDRs": [LARGE_CILIUM_POOL]})
        async with build_worker(env.client, fake.activities(), task_queue=task_queue,
                                max_concurrent_activities=64):
            started = time.monotonic()
            handle = await start_with(env, migration, task_queue,
                                      continue_as_new_at=continue_as_new_at)
            report = await handle.result()
            wall = time.monotonic() - started
        assert report.phase is Phase.COMPLETED, report.phase
        sizes = await history_sizes(env.client, handle.id, fake.nodes)
        runs = await fetch_runs(env.client, handle.id)
        carried = max(sum(len(p.data) for p in run.events[0]
                          .workflow_execution_started_event_attributes.input.payloads)
                      for run in runs)
        waves = await wave_histories(env.client, runs)
        wave_result = max((sum(len(p.data) for p in event
                               .workflow_execution_completed_event_attributes.result.payloads)
                           for wave in waves.values() for event in wave.events[-1:]), default=0)
        show(nodes, max_unavailable, continue_as_new_at, sizes, carried, wall)
        print(f"largest wave result: {wave_result / 1024:.0f} KiB")
    finally:
        await env.shutdown()


def show(nodes: int, max_unavailable: int, continue_as_new_at: int, sizes: HistorySizes,
         carried: int, wall: float) -> None:
    child = sorted(sizes.nodes.values())
    print(f"{nodes} nodes, maxUnavailable {max_unavailable}, continue as new at "
          f"{continue_as_new_at} events: {wall:.0f}s wall ({nodes / wall:.1f} nodes/s)")
    print(f"parent: {len(sizes.runs)} runs, events per run {sizes.runs}")
    print(f"parent events per node: {sizes.parent_events_per_node:.2f} while migrating nodes, "
          f"{sizes.all_parent_events_per_node:.2f} with discover/install/finalize")
    per_wave = sorted(sizes.waves.values())
    if per_wave:
        print(f"wave workflows: {len(per_wave)}, events min {per_wave[0]}, median "
              f"{per_wave[len(per_wave) // 2]}, max {per_wave[-1]}; "
              f"{sum(per_wave) / nodes:.2f} per node")
    print(f"node workflow events: min {child[0]}, median {child[len(child) // 2]}, "
          f"max {child[-1]}")
    print(f"longest single history: {sizes.longest} events (hard limit {HARD_LIMIT})")
    print(f"largest run input (the carried state): {carried / 1024:.0f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--max-unavailable", type=int, default=50)
    parser.add_argument("--continue-as-new-at", type=int, default=DEFAULT_CONTINUE_AS_NEW_AT)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.nodes, arguments.max_unavailable, arguments.continue_as_new_at))
