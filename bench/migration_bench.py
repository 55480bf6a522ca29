"""A whole migration of a large sandbox: wall time, history sizes, API-server requests per node.

    .venv/bin/python bench/migration_bench.py [--nodes 100] [--max-unavailable 10]

Figures, not assertions. The critical-path bound is the sum, over waves, of the slowest node's
own migration time: what the run would take with zero orchestration overhead for this wave plan.
API requests come from the API server's `apiserver_request_total`; they include the simulated
kubelets' own traffic, so the simulator-only baseline over the same time is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.kubeapi import Kube  # noqa: E402
from sandbox import cluster  # noqa: E402
from sandbox.cilium_release import ensure_default_release  # noqa: E402
from sandbox.toolchain import ensure_toolchain  # noqa: E402
from tests.conftest import temporal_cli  # noqa: E402
from tests.integration.migration_support import (  # noqa: E402
    activity_context,
    in_process_worker,
    migration_spec,
    start_migration,
    wait_progress,
)
from workflows.identity import SEARCH_ATTRIBUTES  # noqa: E402
from workflows.progress import Phase  # noqa: E402

_SAMPLE = re.compile(r"^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def api_requests(kube: Kube) -> float:
    method, url, headers, _, _ = kube.api.param_serialize(
        method="GET", resource_path="/metrics", header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"])
    text = kube.api.call_api(method, url, header_params=headers).read().decode()
    return sum(float(value) for value in _SAMPLE.findall(text))


async def main(nodes: int, max_unavailable: int) -> None:
    toolchain = ensure_toolchain()
    ensure_default_release(toolchain["helm"])  # the tests' spec installs it
    state_dir = Path(tempfile.mkdtemp(prefix="bench-migration-")) / "state"
    started = time.monotonic()
    cluster.up(state_dir, nodes=nodes, control_planes=1, zones=3,
               simulator_args=("--reboot-seconds", "1"), timeout=600.0 + nodes)
    print(f"sandbox with {nodes} nodes up in {time.monotonic() - started:.0f}s")
    kube = Kube(str(state_dir / "kubeconfig"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES)
    try:
        idle_before = api_requests(kube)
        await asyncio.sleep(30)
        idle_rate = (api_requests(kube) - idle_before) / 30
        name = "bench"
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"maxUnavailable": max_unavailable},
                              drain={"timeout": "5m"}, reboot={"timeout": "5m"})
        task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        before = api_requests(kube)
        started = time.monotonic()
        async with in_process_worker(env.client, activity_context(state_dir, toolchain, name),
                                     task_queue):
            handle = await start_migration(env.client, spec, task_queue)
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion",
                                timeout=7200)
            report = await handle.result()
        wall = time.monotonic() - started
        requests = api_requests(kube) - before
        critical = 0.0
        for wave in report.waves:
            critical += max((report.nodes[n].finished_at - report.nodes[n].started_at)
                            .total_seconds() for n in wave.nodes
                            if report.nodes[n].finished_at and report.nodes[n].started_at)
        parent_events = len((await handle.fetch_history()).events)
        child_events = [len((await env.client.get_workflow_handle(
            f"{handle.id}/node/{n}").fetch_history()).events) for n in list(report.nodes)[:10]]
        print(f"migration of {nodes} nodes in {len(report.waves)} waves "
              f"(maxUnavailable {max_unavailable}): {wall:.0f}s wall")
        print(f"critical-path bound (sum of each wave's slowest node): {critical:.0f}s; "
              f"orchestration overhead {wall - critical:.0f}s ({(wall / critical - 1) * 100:.0f}%)")
        print(f"history events: parent {parent_events}; per node "
              f"{min(child_events)}..{max(child_events)} (first 10 children)")
        print(f"API-server requests during the run: {requests:.0f} total, "
              f"{requests / nodes:.0f} per node; simulated kubelets alone at idle: "
              f"{idle_rate:.1f}/s, {idle_rate * wall / nodes:.0f} per node over the same time")
    finally:
        await env.shutdown()
        cluster.down(state_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--max-unavailable", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.nodes, arguments.max_unavailable))
