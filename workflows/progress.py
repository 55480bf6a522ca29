"""What a migration reports about itself: the `progress` query's model and the final report.

One model serves the CLI's live view, `--output json`, and post-mortems (queries also work on
completed workflows). Times come from `workflow.now()`, never from the local clock.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    field_serializer,
    field_validator,
)

from plan.contract import (
    CheckResult,
    ConnectivityFigures,
    DrainBlocker,
    EchoMeshStatus,
    InstalledChart,
    NodeStep,
)
from plan.findings import Finding


class Phase(StrEnum):
    DISCOVERING = "discovering"
    PREFLIGHT = "preflight"
    INSTALLING = "installing"
    CONFIGURING = "configuring"
    MIGRATING = "migrating"
    FINALIZING = "finalizing"
    REMOVING_FLANNEL = "removing-flannel"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


class NodeState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    BLOCKED = "blocked"  # waiting for an operator decision
    ROLLING_BACK = "rolling-back"
    MIGRATED = "migrated"
    ROLLED_BACK = "rolled-back"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Approval(BaseModel):
    gate: str
    approver: str  # the name the client claimed (`approve --as`); the workflow cannot check it
    reason: str = ""
    at: datetime
    # The ID of the Update that approved: the key to its accepted event in history, which holds
    # the identity of the client connection that sent it. None in approvals recorded before.
    update_id: str | None = None
    # Never set by the workflow, which is not told who sent an Update: the client sets it from
    # the accepted event (client/approval_senders.py). As self-declared as the approver.
    client_identity: str | None = None


class NodeProgress(BaseModel):
    """One node's migration, owned by its NodeMigration child. The parent keeps the child's
    result, or while the node waits for a decision the record it reported; while the node runs
    its step is the child's own (`progress` query on the child), which `status` asks for."""

    name: str
    wave: int
    state: NodeState = NodeState.PENDING
    step: NodeStep | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    boot_id_before: str | None = None
    boot_id_after: str | None = None
    cordoned_by_us: bool = False
    blocker: str | None = None  # one line for humans
    blockers: list[DrainBlocker] = Field(default_factory=list)
    verify: list[CheckResult] = Field(default_factory=list)
    error: str | None = None
    # Only the wave and the state are kept: the rest is the node workflow's result. A migration
    # of more than FOLD_MIGRATED_ABOVE nodes keeps its migrated nodes so.
    folded: bool = False

    def folded_record(self) -> NodeProgress:
        return NodeProgress(name=self.name, wave=self.wave, state=self.state, folded=True)

    def kept(self, fold_migrated: bool) -> NodeProgress:
        """What the cluster keeps of a node workflow's result: folded if it migrated and the
        migration folds its migrated nodes (it has more than FOLD_MIGRATED_ABOVE of them)."""
        return (self.folded_record() if fold_migrated and self.state is NodeState.MIGRATED
                else self)


# Past this many nodes the parent folds each migrated node's record as it ends. Whole records
# (times, bootIDs, each check's detail) take about 1 kB each with cloud node names: 5,000 of
# them are 5 MB, over Temporal's 2 MB payload limit for the state a run carries into the next
# and for the migration's result. Folded, a record is its name, wave and state.
FOLD_MIGRATED_ABOVE = 500


# A WaveMigration's history holds about four events per node (its child's start, started and
# completed, and a share of workflow tasks), and its result a record per node: past about
# 2,400 nodes one wave's history would pass Temporal's warning of 10,240 events. So a wave of
# more nodes than this (a maxUnavailable of 25% at 5,000 nodes is 1,250) runs as several
# WaveMigration parts side by side, each at most this many nodes.
WAVE_PART_NODES = 1_000


class WaveResult(BaseModel):
    """What a WaveMigration returns: each of its nodes' record as the cluster keeps it, in the
    wave's order. A node whose workflow failed is FAILED with the failure as its error, one
    cancelled (an abort) CANCELLED; the others are their node workflow's result."""

    nodes: list[NodeProgress]

    @field_serializer("nodes")
    def _without_defaults(self, nodes: list[NodeProgress]) -> list[dict[str, Any]]:
        """A large wave's records must fit in one payload: fields still at their default are
        left out (and come back as defaults). Folded, a record is then about 60 bytes."""
        return [node.model_dump(mode="json", exclude_defaults=True) for node in nodes]


class WaveProgress(BaseModel):
    index: int
    kind: str
    nodes: list[str]
    zone: str | None = None
    state: str = "pending"  # pending, running, done, halted
    # What the connectivity monitor counted while the wave's nodes moved; None: not monitored.
    connectivity: ConnectivityFigures | None = None


class Progress(BaseModel):
    cluster: str
    # Where the cluster's steps run, when it names a queue of its own (spec cluster.taskQueue).
    task_queue: str | None = None
    phase: Phase = Phase.DISCOVERING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    paused: bool = False
    halted: str | None = None  # why new waves are not starting until the operator resumes
    waves: list[WaveProgress] = Field(default_factory=list)
    nodes: dict[str, NodeProgress] = Field(default_factory=dict)
    excluded_nodes: list[str] = Field(default_factory=list)
    # Finalize waits until these nodes run Cilium: node -> why not yet (e.g. "skipped").
    not_migrated: dict[str, str] = Field(default_factory=dict)
    pending_gates: list[str] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    values_diff: list[tuple[str, Any, Any]] = Field(default_factory=list)
    # The chart the last Helm step installed (name, version, digest, source).
    chart: InstalledChart | None = None
    # The echo mesh as deployed (None before, and in runs without one); removed at the end.
    echo_mesh: EchoMeshStatus | None = None
    echo_mesh_removed: bool = False
    error: str | None = None

    @field_serializer("nodes", mode="wrap")
    def _folded_as_pairs(self, nodes: dict[str, NodeProgress],
                         handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A folded record is written as ``[wave, state]`` under its name's key."""
        written: dict[str, Any] = handler(nodes)
        for name, node in nodes.items():
            if node.folded:
                written[name] = [node.wave, node.state.value]
        return written

    @field_validator("nodes", mode="before")
    @classmethod
    def _unfold_pairs(cls, nodes: Any) -> Any:
        if not isinstance(nodes, dict):
            return nodes
        return {name: {"name": name, "wave": record[0], "state": record[1], "folded": True}
                if isinstance(record, list | tuple) else record
                for name, record in nodes.items()}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def blockers(self) -> list[str]:
        """Every reason the run is waiting, one line each."""
        lines = [f"gate {gate} waits for approval" for gate in self.pending_gates]
        if self.halted:
            lines.append(self.halted)
        lines += [f"node {n.name}: {n.blocker}" for n in self.nodes.values() if n.blocker]
        return lines

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes.values():
            counts[node.state.value] = counts.get(node.state.value, 0) + 1
        return counts
