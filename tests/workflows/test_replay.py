"""Every recorded history replays against the current workflow code.

Histories come from real runs (tests/integration/test_migration.py with
CILIUM_MIGRATE_RECORD_HISTORIES=1; with each run's first child, a WaveMigration since waves
have their own workflow), the continued-as-new chain from tests/workflows/test_history_budget.py
(with its first wave's WaveMigration), the fleets (`fleet__*`: stages, soak, approval; a failed
cluster retried; a soak halted by a degraded cluster; a cluster halted by a rolled-back node,
with that cluster's own history telling the fleet: `rolled` before and `blocked` since the
fleet hears of nodes waiting for `decide` too) from tests/workflows/test_fleet_workflow.py
and a cluster on its own task queue (`cluster-queue__*`) from
tests/workflows/test_cluster_task_queue.py, and a wave run in parts (`wave-parts__*`) from
tests/workflows/test_wave_workflow.py, with the same switch. A file holds one run, or
every run of a migration that continued as new (`history export`'s layout); each run replays
on its own. A change that breaks one needs `workflow.patched`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from client.history_runs import exported_histories
from worker.build import WORKFLOWS

HISTORIES = sorted((Path(__file__).resolve().parent.parent / "histories").glob("*.json"))


def load(path: Path) -> list[WorkflowHistory]:
    saved = json.loads(path.read_text())
    return [WorkflowHistory.from_json(saved["workflow_id"], history)
            for history in exported_histories(saved)]


def test_histories_were_recorded() -> None:
    assert len(HISTORIES) >= 2, "record histories: see this module's docstring"
    runs = [history for path in HISTORIES
            for history in exported_histories(json.loads(path.read_text()))]
    types = {run["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
             for run in runs}
    assert types == {"ClusterMigration", "WaveMigration", "NodeMigration", "FleetMigration"}
    # At least one chain in which a run continued as new and the next one went on from it.
    assert any("workflowExecutionContinuedAsNewEventAttributes" in run["events"][-1]
               for run in runs)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    for number, history in enumerate(load(path), start=1):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name} run {number}: {result.replay_failure}"
