"""Approval gates: which exist for a policy, which are pending, who may approve them.

Pure bookkeeping, used by the cluster workflow's Update validators (a rejected approval raises
here, before anything is written to history) and by its run method (which waits on a gate).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from plan.spec import ApprovalSpec
from plan.waves import Wave
from workflows.progress import Approval

PREFLIGHT_GATE = "preflight"  # unacknowledged warnings need a human's yes
INSTALL_GATE = "install"
ROLLOUT_GATE = "rollout"
FINALIZE_GATE = "finalize"
REMOVE_FLANNEL_GATE = "remove-flannel"


def wave_gate(wave: Wave) -> str:
    return f"wave-{wave.index}"


def node_gate(node: str) -> str:
    return f"node/{node}"


def planned_gates(policy: str, waves: list[Wave], warnings: bool) -> list[str]:
    """Every gate this run will stop at, in order."""
    gates = [PREFLIGHT_GATE] if warnings else []
    if policy == "none":
        return gates
    gates.append(INSTALL_GATE)
    if policy == "per-phase":
        gates.append(ROLLOUT_GATE)
    elif policy == "per-wave":
        gates += [wave_gate(w) for w in waves]
    elif policy == "per-node":
        gates += [node_gate(n) for w in waves for n in w.nodes]
    return [*gates, FINALIZE_GATE, REMOVE_FLANNEL_GATE]


class GateError(ValueError):
    pass


class GateBook(BaseModel):
    """The gates' state, as a run carries it into the next when it continues as new."""

    planned: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    approved: dict[str, Approval] = Field(default_factory=dict)


class Gates:
    def __init__(self, spec: ApprovalSpec, book: GateBook | None = None) -> None:
        self.spec = spec
        book = book or GateBook()
        self.planned: list[str] = list(book.planned)
        self.pending: list[str] = list(book.pending)
        self.approved: dict[str, Approval] = dict(book.approved)

    def book(self) -> GateBook:
        return GateBook(planned=list(self.planned), pending=list(self.pending),
                        approved=dict(self.approved))

    def plan(self, gates: list[str]) -> None:
        self.planned = gates

    def open(self, gate: str) -> bool:
        """Marks ``gate`` as waiting; False when it needs no wait (unplanned or pre-approved)."""
        if gate not in self.planned or gate in self.approved:
            return False
        if gate not in self.pending:
            self.pending.append(gate)
        return True

    def check(self, gate: str, approver: str) -> None:
        """Raises GateError when this approval must be refused."""
        if self.spec.approvers and approver not in self.spec.approvers:
            raise GateError(f"{approver!r} may not approve; allowed approvers: "
                            f"{', '.join(self.spec.approvers)}")
        if gate in self.approved:
            raise GateError(f"gate {gate} is already approved by {self.approved[gate].approver}")
        if gate in self.pending:
            return
        waiting = ", ".join(self.pending) or "none"
        if gate in self.planned:
            if self.spec.allow_pre_approval:
                return
            raise GateError(f"gate {gate} is not pending yet and this spec does not allow "
                            f"pre-approval; pending gates: {waiting}")
        raise GateError(f"no gate {gate!r} in this migration; pending gates: {waiting}")

    def refuse_invalid(self, gate: str, approver: str) -> None:
        """An Update validator's check: a refused approval is rejected before it is recorded
        in history (ValueError is what the validator raises)."""
        try:
            self.check(gate, approver)
        except GateError as error:
            raise ValueError(str(error)) from None

    def approve(self, gate: str, approver: str, reason: str, at: datetime,
                update_id: str | None = None) -> Approval:
        self.check(gate, approver)
        approval = Approval(gate=gate, approver=approver, reason=reason, at=at,
                            update_id=update_id)
        self.approved[gate] = approval
        if gate in self.pending:
            self.pending.remove(gate)
        return approval
