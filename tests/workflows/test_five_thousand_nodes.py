"""Kubernetes' largest supported cluster, 5,000 nodes, in one migration on a real Temporal dev
server, with the activities replaced at their names' boundary (tests/fakes.py): it completes,
no history nears Temporal's limits (the parent records a few events per wave, each wave's
WaveMigration its nodes' child events), and `status -o json` still answers. The figures (wall
time, events per node, payload sizes) are bench/history_bench.py's and bench/status_bench.py's;
this test asserts only what timing cannot change."""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType

from client.history_runs import fetch_runs
from tests.cli.conftest import cli_env, run_cli
from tests.conftest import local_temporal
from tests.fakes import LARGE_CILIUM_POOL, FakeCluster, passed_checks
from tests.workflows.support import history_sizes, spec, start_with, wave_histories
from tests.workflows.test_history_budget import (
    CHILD_EVENTS,
    EVENTS_PER_RUN,
    EVENTS_PER_WAVE,
    NODE_EVENTS,
    WORKFLOW_TASK_EVENTS,
)
from worker.build import build_worker
from workflows.progress import NodeState, Phase
from workflows.progress_summary import NodesPage, ProgressSummary

NODES = 5_000
MAX_UNAVAILABLE = 100
# Low enough that the parent continues as new a few times, carrying 5,000 records: its
# history no longer grows with the nodes, and the default (8,000 events) is not reached.
CONTINUE_AS_NEW_AT = 400
PARENT_EVENTS_PER_NODE = 5  # issue 13's budget, over every run of the chain
# Temporal warns past this many events in one history; the hard limit is 51,200.
WARNING_EVENTS = 10_240

pytestmark = pytest.mark.timeout(1200)


async def test_five_thousand_nodes_migrate_with_every_history_under_its_budget() -> None:
    # A server of its own: 5,000 node histories would slow every later test sharing one.
    env = await local_temporal("--log-level", "error")
    try:
        task_queue = f"five-thousand-{uuid.uuid4().hex[:6]}"
        fake = FakeCluster(workers=NODES - 1)
        migration = spec(f"large-{task_queue}", approvals={"policy": "none"},
                         rollout={"maxUnavailable": MAX_UNAVAILABLE},
                         network={"podCIDRs": [LARGE_CILIUM_POOL]})
        async with build_worker(env.client, fake.activities(), task_queue=task_queue,
                                max_concurrent_activities=64):
            handle = await start_with(env, migration, task_queue,
                                      continue_as_new_at=CONTINUE_AS_NEW_AT)
            report = await handle.result()
            sizes = await history_sizes(env.client, handle.id, fake.nodes)
            runs = await fetch_runs(env.client, handle.id)
            waves = await wave_histories(env.client, runs)
            address = cli_env(env.client.service_client.config.target_host)
            status = await run_cli("status", migration.cluster.name, "-o", "json",
                                   env=address, timeout=120)
            listed = await run_cli("status", migration.cluster.name, "--nodes", "migrated",
                                   "--limit", "3", "-o", "json", env=address, timeout=120)
    finally:
        await env.shutdown()

    assert report.phase is Phase.COMPLETED, report.error
    assert len(report.nodes) == NODES
    assert all(n.state is NodeState.MIGRATED for n in report.nodes.values())
    # Whole records would not fit one payload: the result keeps each migrated node folded.
    assert all(n.folded for n in report.nodes.values())
    assert set(fake.boot.values()) == {1}  # each node rebooted once, none twice across runs
    # The parent continued as new, and no run of it, nor any wave's or node's, nears the
    # warning.
    assert len(runs) > 1 and sizes.longest <= WARNING_EVENTS, (sizes.runs, sizes.longest)
    assert max(sizes.waves.values()) <= WARNING_EVENTS, sizes.waves
    assert max(sizes.nodes.values()) <= NODE_EVENTS
    # Every wave in a WaveMigration, which holds its nodes' child events; the parent holds the
    # waves' and no per-node event: within the budget whatever the batching of its tasks.
    kinds = [event.event_type for run in runs for event in run.events]
    assert len(waves) == len(report.waves)
    assert sum(kind in CHILD_EVENTS for kind in kinds) == 3 * len(waves)
    assert sum(event.event_type in CHILD_EVENTS for wave in waves.values()
               for event in wave.events) == 3 * NODES
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED not in kinds
    other = [kind for kind in kinds if kind not in WORKFLOW_TASK_EVENTS]
    assert len(other) <= ((len(CHILD_EVENTS) + EVENTS_PER_WAVE) * len(waves)
                          + EVENTS_PER_RUN * len(runs)), (len(other), len(waves), len(runs))
    assert sum(sizes.runs) <= PARENT_EVENTS_PER_NODE * NODES, sizes.runs
    # `status -o json` answers with the bounded summary, not 5,000 node records.
    assert status.code == 0, status
    summary = ProgressSummary.model_validate(json.loads(status.out))
    assert summary.nodes == NODES and summary.counts == {NodeState.MIGRATED.value: NODES}
    # Listing nodes reads each folded record whole from the node's own workflow.
    assert listed.code == 0, listed
    page = NodesPage.model_validate(json.loads(listed.out))
    assert page.total == NODES and len(page.nodes) == 3
    assert all(not n.folded and n.boot_id_after and n.verify == passed_checks(n.name)
               for n in page.nodes), page.nodes
