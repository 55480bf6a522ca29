"""The approval gates' bookkeeping, without a workflow: which gates a policy plans, what may be
approved when and by whom, and what an approval records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plan.spec import ApprovalSpec
from plan.waves import Wave
from workflows.gates import (
    FINALIZE_GATE,
    INSTALL_GATE,
    PREFLIGHT_GATE,
    REMOVE_FLANNEL_GATE,
    ROLLOUT_GATE,
    GateBook,
    GateError,
    Gates,
    node_gate,
    planned_gates,
    wave_gate,
)

WAVES = [Wave(index=1, kind="canary", nodes=["w-1"]),
         Wave(index=2, kind="workers", nodes=["w-2", "w-3"])]
AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def gates(**spec: object) -> Gates:
    book = Gates(ApprovalSpec.model_validate(spec))
    book.plan(planned_gates(book.spec.policy, WAVES, warnings=False))
    return book


@pytest.mark.parametrize("policy, middle", [
    ("per-phase", [ROLLOUT_GATE]),
    ("per-wave", ["wave-1", "wave-2"]),
    ("per-node", ["node/w-1", "node/w-2", "node/w-3"]),
])
def test_each_policy_plans_its_gates_in_order(policy: str, middle: list[str]) -> None:
    assert planned_gates(policy, WAVES, warnings=False) == [
        INSTALL_GATE, *middle, FINALIZE_GATE, REMOVE_FLANNEL_GATE]


def test_no_approvals_but_unacknowledged_warnings_still_stop_once() -> None:
    assert planned_gates("none", WAVES, warnings=False) == []
    assert planned_gates("none", WAVES, warnings=True) == [PREFLIGHT_GATE]
    assert planned_gates("per-phase", WAVES, warnings=True)[0] == PREFLIGHT_GATE


def test_gate_names() -> None:
    assert wave_gate(WAVES[1]) == "wave-2"
    assert node_gate("w-3") == "node/w-3"


def test_only_planned_unapproved_gates_open() -> None:
    book = gates(policy="per-wave")
    assert book.open("wave-1") is True
    assert book.open("wave-1") is True and book.pending == ["wave-1"]  # no duplicate
    assert book.open(ROLLOUT_GATE) is False  # not planned under per-wave
    book.approve("wave-1", "alice", "canary ok", AT)
    assert book.open("wave-1") is False and book.pending == []


def test_approval_records_who_why_and_when() -> None:
    book = gates(policy="per-phase")
    book.open(INSTALL_GATE)
    approval = book.approve(INSTALL_GATE, "alice", "values reviewed", AT)
    assert (approval.gate, approval.approver, approval.reason, approval.at) == (
        INSTALL_GATE, "alice", "values reviewed", AT)
    assert book.approved[INSTALL_GATE] is approval
    assert approval.update_id is None  # no Update named: nothing to find its sender by


def test_approval_keeps_the_update_id_and_older_carried_approvals_still_load() -> None:
    book = gates(policy="per-phase")
    book.open(INSTALL_GATE)
    approval = book.approve(INSTALL_GATE, "alice", "", AT, update_id="approve/install/alice")
    assert approval.update_id == "approve/install/alice"
    # A run recorded before the field existed carries its approvals without it.
    older = GateBook.model_validate({"planned": [INSTALL_GATE], "approved": {INSTALL_GATE: {
        "gate": INSTALL_GATE, "approver": "bob", "reason": "", "at": AT.isoformat()}}})
    assert older.approved[INSTALL_GATE].update_id is None
    assert older.approved[INSTALL_GATE].approver == "bob"


def test_refusals_say_why() -> None:
    book = gates(policy="per-wave", approvers=["alice", "bob"])
    book.open("wave-1")
    with pytest.raises(GateError, match="'mallory' may not approve; allowed approvers: alice, bob"):
        book.check("wave-1", "mallory")
    with pytest.raises(GateError, match="no gate 'wave-9'.*pending gates: wave-1"):
        book.check("wave-9", "alice")
    with pytest.raises(GateError, match="gate wave-2 is not pending yet.*pending gates: wave-1"):
        book.check("wave-2", "alice")
    book.approve("wave-1", "bob", "", AT)
    with pytest.raises(GateError, match="already approved by bob"):
        book.approve("wave-1", "alice", "", AT)


def test_pre_approval_when_the_spec_allows_it() -> None:
    book = gates(policy="per-wave", allowPreApproval=True)
    book.approve("wave-2", "alice", "ahead of time", AT)
    assert book.open("wave-2") is False  # already approved: the run will not wait there
    with pytest.raises(GateError, match="no gate 'wave-7'"):
        book.check("wave-7", "alice")  # unplanned gates stay refused
