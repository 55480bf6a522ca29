"""The rehearsal's autopilot: what it sends in answer to what `status -o json` shows, so that a
rehearsed run goes through every wave and ends even when nodes block."""

from __future__ import annotations

from typing import Any

from client.rehearsal_run import STUCK_POLLS, Autopilot


def summary(gates: tuple[str, ...] = (), blocked: tuple[str, ...] = (), halted: str | None = None,
            counts: dict[str, int] | None = None, not_migrated: int = 0) -> dict[str, Any]:
    return {"phase": "migrating", "pending_gates": {"total": len(gates), "items": list(gates)},
            "attention": {"total": len(blocked),
                          "items": [{"name": n, "state": "blocked"} for n in blocked]},
            "halted": halted, "paused": False, "counts": counts or {},
            "not_migrated": {"total": not_migrated, "items": []}}


def test_gates_are_approved_as_rehearsal() -> None:
    assert Autopilot().respond(summary(gates=("install", "wave-1"))) == [
        ["approve", "install", "--as", "rehearsal", "--reason",
         "rehearsal: granted without a person"],
        ["approve", "wave-1", "--as", "rehearsal", "--reason",
         "rehearsal: granted without a person"]]


def test_a_blocked_node_is_skipped_once_and_the_run_resumed_after() -> None:
    pilot = Autopilot()
    assert pilot.respond(summary(blocked=("w-1",), halted="w-1 blocked",
                                 counts={"blocked": 1, "pending": 2})) == [
        ["decide", "w-1", "skip", "--as", "rehearsal"]]
    assert pilot.respond(summary(halted="waiting for resume after a skip",
                                 counts={"skipped": 1, "pending": 2})) == [
        ["resume", "--as", "rehearsal"]]
    assert pilot.skipped == ["w-1"] and pilot.stop is None
    # What blocked it is kept: the skip clears it from the node's own record.
    assert pilot.blocked_records == {"w-1": {"name": "w-1", "state": "blocked"}}


def test_a_run_held_by_skipped_nodes_is_stopped_after_a_few_looks() -> None:
    pilot = Autopilot()
    held = summary(halted="w-1 was not migrated", counts={"skipped": 1, "migrated": 3},
                   not_migrated=1)
    for _ in range(STUCK_POLLS - 1):
        pilot.respond(held)
        assert pilot.stop is None
    pilot.respond(held)
    assert pilot.stop == "nodes were skipped, so the run cannot finalize"


def test_a_run_still_moving_is_never_stopped() -> None:
    pilot = Autopilot()
    for _ in range(STUCK_POLLS * 3):
        pilot.respond(summary(counts={"running": 1, "skipped": 1}, not_migrated=1))
        pilot.respond(summary(gates=("wave-3",), counts={"skipped": 1}, not_migrated=1))
    assert pilot.stop is None


def test_an_interactive_rehearsal_leaves_every_decision_to_the_operator() -> None:
    pilot = Autopilot(interactive=True)
    held = summary(gates=("wave-1",), blocked=("w-1",), halted="held", not_migrated=1)
    for _ in range(STUCK_POLLS * 2):
        assert pilot.respond(held) == []
    assert pilot.stop is None and pilot.skipped == []
