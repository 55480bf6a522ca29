"""What `status` costs at scale: payload sizes and render time of the bounded views.

    .venv/bin/python bench/status_bench.py [--nodes 5000] [--wave-size 50] [--server]

Figures, not assertions. In process (no server): builds a Progress as a migration of NODES
workers reports it midway (tests/large_progress.py: half the waves done, 60 nodes blocked, the
middle wave running) and prints the JSON size of the full `progress` answer, the
`progress_summary` answer and a `nodes_page` of the most a page holds, with the time to build
and render the status view. With --server: starts a Temporal dev server, runs a migration of
NODES fake nodes held at its install gate (every node pending; activities faked at the
activity-name boundary, tests/fakes.py) and times `status -o json` against the full query.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers


from client.status_view import render_summary  # noqa: E402
from tests.conftest import local_temporal  # noqa: E402
from tests.fakes import LARGE_CILIUM_POOL, FakeCluster  # noqa: E402
from tests.large_progress import large_progress  # noqa: E402
from tests.workflows.support import spec, start, until  # noqa: E402
from worker.build import build_worker  # noqa: E402
from workflows.cluster import ClusterMigrationWorkflow  # noqa: E402
from workflows.progress_summary import (  # noqa: E402
    PAGE_LIMIT,
    NodesPageRequest,
    nodes_page,
    summarize,
)

REPO = Path(__file__).resolve().parent.parent


def timed(repeat: int, call: object) -> float:
    """Milliseconds per call, the best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best * 1000


def in_process(nodes: int, wave_size: int) -> None:
    progress = large_progress(nodes, wave_size=wave_size)
    summary = summarize(progress)
    wave = summary.current_wave
    assert wave is not None
    page = nodes_page(progress, NodesPageRequest(limit=PAGE_LIMIT))
    wave_page = nodes_page(progress, NodesPageRequest(wave=wave.index, limit=50))
    sizes = {"full progress (the `progress` query)": len(progress.model_dump_json()),
             "summary (`progress_summary`)": len(summary.model_dump_json()),
             f"a page of {PAGE_LIMIT} nodes (`nodes_page`)": len(page.model_dump_json()),
             "the current wave's nodes (default view)": len(wave_page.model_dump_json())}
    print(f"{nodes} nodes, {len(progress.waves)} waves of {wave_size}, "
          f"{summary.counts}")
    for what, size in sizes.items():
        print(f"  {what:<42} {size:>11,} bytes")
    print(f"  summarize: {timed(5, lambda: summarize(progress)):.1f} ms; nodes_page: "
          f"{timed(5, lambda: nodes_page(progress, NodesPageRequest(limit=PAGE_LIMIT))):.1f} "
          f"ms; render the status view: "
          f"{timed(5, lambda: render_summary(summary, wave_page)):.1f} ms")
    lines = render_summary(summary, wave_page).count("\n") + 1
    print(f"  the status view is {lines} lines")


async def on_server(nodes: int, wave_size: int) -> None:
    env = await local_temporal()
    try:
        fake = FakeCluster(workers=nodes - 1)
        task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        migration = spec(f"bench-{task_queue}", approvals={"policy": "per-wave"},
                         rollout={"maxUnavailable": wave_size},
                         network={"podCIDRs": [LARGE_CILIUM_POOL]})
        async with build_worker(env.client, fake.activities(), task_queue=task_queue):
            handle = await start(env, fake, migration, task_queue)
            await until(handle, lambda p: p.pending_gates == ["install"], "the install gate",
                        attempts=2400)
            started = time.perf_counter()
            full = await handle.query(ClusterMigrationWorkflow.get_progress)
            full_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            await handle.query(ClusterMigrationWorkflow.get_summary)
            summary_ms = (time.perf_counter() - started) * 1000
            env_vars = {**os.environ, "TEMPORAL_ADDRESS":
                        env.client.service_client.config.target_host, "PYTHONPATH": str(REPO)}
            runs = {}
            for flags in (("-o", "json"), ()):
                started = time.perf_counter()
                done = await asyncio.to_thread(subprocess.run, [
                    sys.executable, "-m", "client.cli", "status", migration.cluster.name,
                    *flags], cwd=REPO, env=env_vars, capture_output=True, text=True)
                runs[" ".join(flags) or "table"] = (time.perf_counter() - started, done)
            await handle.terminate("bench over")
        print(f"dev server, {len(full.nodes)} nodes pending at the install gate:")
        print(f"  `progress` query {full_ms:.0f} ms ({len(full.model_dump_json()):,} bytes); "
              f"`progress_summary` query {summary_ms:.0f} ms")
        for how, (seconds, done) in runs.items():
            print(f"  `status {how}` (a new process, Python start included): {seconds:.2f} s, "
                  f"exit {done.returncode}, {len(done.stdout):,} bytes out")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--wave-size", type=int, default=50)
    parser.add_argument("--server", action="store_true",
                        help="also time status on a dev server (a minute or two)")
    arguments = parser.parse_args()
    in_process(arguments.nodes, arguments.wave_size)
    if arguments.server:
        asyncio.run(on_server(arguments.nodes, arguments.wave_size))
