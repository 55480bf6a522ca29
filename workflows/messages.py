"""Inputs of the operator's Updates and of the workflows themselves."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from plan.fleet import Fleet
from plan.policies import ClusterRef, NodePolicies
from plan.spec import MigrationSpec
from workflows.continuation import DEFAULT_CONTINUE_AS_NEW_AT, Continuation
from workflows.progress import FOLD_MIGRATED_ABOVE, WAVE_PART_NODES


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApproveRequest(Message):
    gate: str
    approver: str = Field(min_length=1)
    reason: str = ""


class PauseRequest(Message):
    operator: str = ""
    reason: str = ""


class Decision(StrEnum):
    RETRY = "retry"
    ROLLBACK = "rollback"
    SKIP = "skip"


class DecideRequest(Message):
    node: str
    decision: Decision
    operator: str = ""
    reason: str = ""


class MigrationInput(Message):
    spec: MigrationSpec
    # Past this many events in its history the run continues as new, between two waves.
    continue_as_new_at: int = Field(default=DEFAULT_CONTINUE_AS_NEW_AT, ge=1)
    # A migration of more nodes than this keeps its migrated nodes' records folded.
    fold_migrated_above: int = Field(default=FOLD_MIGRATED_ABOVE, ge=0)
    # A wave of more nodes than this runs as several WaveMigration parts, each at most this.
    wave_part_nodes: int = Field(default=WAVE_PART_NODES, ge=1)
    # Set by the run this one continues: where it got to.
    continued: Continuation | None = None


class NodeMigrationInput(Message):
    """Everything a node's migration needs, decided by the parent: the policies go to the
    steps unchanged."""

    cluster: ClusterRef
    node: str
    wave: int
    migration_id: str  # the parent's workflow ID: reports go there, cordons are owned by it
    policies: NodePolicies


class WaveMigrationInput(Message):
    """One wave's nodes, each migrated as NodeMigrationInput says with these fields."""

    cluster: ClusterRef
    wave: int
    nodes: list[str]
    migration_id: str  # the cluster's workflow ID, as each node's NodeMigrationInput has it
    policies: NodePolicies
    # Whether the result keeps migrated nodes folded (the cluster folds its own records so).
    fold_migrated: bool


class ClusterDecision(StrEnum):
    """What a fleet does with a cluster whose migration failed."""

    RETRY = "retry"  # start the cluster's migration again
    SKIP = "skip"  # leave the cluster as it is and go on without it


class FleetDecideRequest(Message):
    cluster: str
    decision: ClusterDecision
    operator: str = ""
    reason: str = ""


class FleetInput(Message):
    fleet: Fleet


class ClusterHalt(Message):
    """What a cluster started by a fleet tells the fleet whenever its halt changes: why it
    halted (a failed or rolled-back node, a health check, the connectivity monitor, finalize
    waiting for nodes), or None once it goes on."""
    cluster: str
    halted: str | None = None
