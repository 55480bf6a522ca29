"""What a fleet reports about itself: the FleetMigration's `progress` query and its result.

The fleet keeps only what it decides: which stage runs, which clusters started, how each
ended, the gates and the soak. How far a cluster's own migration got (its phase, its nodes) is
the cluster workflow's to say; `fleet status` asks each cluster for its summary beside this.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from plan.fleet import Fleet, stage_gate
from workflows.progress import Approval


class FleetPhase(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self is not FleetPhase.RUNNING


class StageState(StrEnum):
    PENDING = "pending"
    WAITING_APPROVAL = "waiting-approval"
    RUNNING = "running"
    SOAKING = "soaking"
    DONE = "done"
    CANCELLED = "cancelled"


class ClusterState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # the cluster's migration failed: the fleet waits for a decision
    CANCELLED = "cancelled"  # aborted, by the fleet's abort or on its own
    SKIPPED = "skipped"  # the operator chose to go on without it


class FleetClusterProgress(BaseModel):
    name: str
    stage: int
    state: ClusterState = ClusterState.PENDING
    attempts: int = 0
    workflow_id: str
    run_id: str | None = None  # the latest attempt's first run
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    waiting_for_decision: bool = False
    # While running: why the cluster's own migration halted (it said so), until it goes on.
    halted: str | None = None


class StageProgress(BaseModel):
    index: int
    name: str
    clusters: list[str]
    concurrency: int
    soak_seconds: float
    approval: bool
    state: StageState = StageState.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    soak_ends_at: datetime | None = None  # while soaking: when the next stage may start
    soak_checks: int = 0  # health checks of its clusters during the soak
    soak_problems: list[str] = Field(default_factory=list)  # what the last soak found wrong

    @property
    def gate(self) -> str:
        return stage_gate(self.index)


class FleetProgress(BaseModel):
    fleet: str
    phase: FleetPhase = FleetPhase.RUNNING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_stage: int | None = None
    paused: bool = False
    halted: str | None = None  # why no new cluster starts until the operator decides
    stages: list[StageProgress] = Field(default_factory=list)
    clusters: dict[str, FleetClusterProgress] = Field(default_factory=dict)
    pending_gates: list[str] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    error: str | None = None

    @classmethod
    def planned(cls, fleet: Fleet, workflow_ids: dict[str, str]) -> FleetProgress:
        return cls(
            fleet=fleet.name,
            stages=[StageProgress(index=s.index, name=s.name, clusters=s.clusters,
                                  concurrency=s.concurrency, soak_seconds=s.soak_seconds,
                                  approval=s.approval) for s in fleet.stages],
            clusters={c: FleetClusterProgress(name=c, stage=s.index, workflow_id=workflow_ids[c])
                      for s in fleet.stages for c in s.clusters})
