"""Inputs of the operator's Updates and of the workflows themselves."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from plan.spec import MigrationSpec
from plan.steps import CheckResult, ClusterRef, DrainBlocker


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


class NodeMigrationInput(Message):
    """Everything a node's migration needs, decided by the parent."""

    cluster: ClusterRef
    node: str
    wave: int
    run_id: str
    parent_id: str
    cilium_namespace: str
    cilium_pools: list[str]
    flannel_network: str | None
    drain_timeout_seconds: float
    drain_grace_period_seconds: int | None
    drain_delete_empty_dir_data: bool
    drain_force_on_timeout: bool
    reboot_strategy: str
    reboot_image: str
    reboot_command: list[str] | None
    reboot_timeout_seconds: float
    verify_image: str
    verify_checks: list[str]
    verify_timeout_seconds: float


class NodeEvent(Message):
    """A child's report to its parent: the step it is on, or why it is blocked."""

    node: str
    state: str
    step: str | None = None
    blocker: str | None = None
    blockers: list[DrainBlocker] = Field(default_factory=list)
    verify: list[CheckResult] = Field(default_factory=list)
    boot_id_before: str | None = None
    boot_id_after: str | None = None
    cordoned_by_us: bool | None = None
