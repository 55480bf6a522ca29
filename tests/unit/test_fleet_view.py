"""`fleet status`'s text: each thing that holds the fleet comes with the command that lifts it."""

from __future__ import annotations

from datetime import UTC, datetime

from client.fleet_view import render_fleet
from client.fleets import ClusterReading
from workflows.fleet_progress import (
    ClusterState,
    FleetClusterProgress,
    FleetProgress,
    StageProgress,
)

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def progress() -> FleetProgress:
    return FleetProgress(
        fleet="rollout", current_stage=1,
        stages=[StageProgress(index=1, name="canary", clusters=["east", "west"], concurrency=2,
                              soak_seconds=0, approval=False),
                StageProgress(index=2, name="prod", clusters=["north"], concurrency=1,
                              soak_seconds=0, approval=False)],
        clusters={name: FleetClusterProgress(name=name, stage=stage,
                                             workflow_id=f"cilium-migrate/{name}")
                  for name, stage in (("east", 1), ("west", 1), ("north", 2))})


def test_a_halted_cluster_points_at_its_own_commands_and_a_failed_one_at_fleet_decide() -> None:
    fleet = progress()
    fleet.clusters["east"].state = ClusterState.RUNNING
    fleet.clusters["east"].halted = "node w-1 was rolled-back; resume to go on"
    fleet.clusters["west"].state = ClusterState.FAILED
    fleet.clusters["west"].waiting_for_decision = True
    fleet.halted = "cluster west failed | cluster east halted"
    text = render_fleet(fleet, {"east": ClusterReading()}, NOW)
    assert "HALTED: cluster west failed | cluster east halted" in text
    assert "`cilium-migrate status east`, then `decide` or `resume` there" in text
    assert "`cilium-migrate fleet decide rollout west retry` (or skip)" in text
    assert "status west`" not in text and "fleet decide rollout east" not in text


def test_nothing_is_suggested_when_nothing_holds_the_fleet() -> None:
    text = render_fleet(progress(), {}, NOW)
    assert "HALTED" not in text and "fleet decide" not in text and "there" not in text
