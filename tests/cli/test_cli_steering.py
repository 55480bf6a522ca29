"""`approve`, `pause`, `resume`, `decide`: Updates the workflow may refuse, with its reason on
one line and exit 2; a repeated request (same update ID) is answered once."""

from __future__ import annotations

import asyncio
import json
import socket

from tests.cli.conftest import UNREACHABLE_ADDRESS, Cli, Migrations
from tests.fakes import FakeCluster
from workflows.progress import NodeState


async def test_approvals_accept_the_pending_gate_and_refuse_the_rest(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    spec = migrations.spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]})
    await cli("start", "-f", str(spec))
    await migrations.until(name, lambda p: p.pending_gates == ["install"], "the install gate")

    wrong_gate, wrong_person, unknown_gate = await asyncio.gather(
        cli("approve", name, "wave-1"), cli("approve", name, "install", "--as", "mallory"),
        cli("approve", name, "nonsense"))
    approved = await cli("approve", name, "install", "--reason", "values reviewed")
    repeated = await cli("approve", name, "install", "--reason", "values reviewed")

    assert wrong_gate.code == 2, wrong_gate
    assert wrong_gate.err == ("error: approve refused: gate wave-1 is not pending yet and this "
                              "spec does not allow pre-approval; pending gates: install\n")
    assert wrong_person.code == 2, wrong_person
    assert wrong_person.err == ("error: approve refused: 'mallory' may not approve; allowed "
                                "approvers: alice\n")
    assert unknown_gate.code == 2 and "no gate 'nonsense'" in unknown_gate.err, unknown_gate
    assert approved.code == 0, approved
    assert approved.out == f"{name}: gate install approved by alice\n"  # $USER is the approver
    # The same approval again is the same update ID: answered from the first, not refused.
    assert repeated.code == 0 and repeated.out == approved.out, repeated
    await migrations.until(name, lambda p: p.pending_gates == ["wave-1"], "the wave-1 gate")
    # Refused earlier under the same update ID: a refusal is not recorded, so it counts now.
    wave = await cli("approve", name, "wave-1")
    assert wave.code == 0 and wave.out == f"{name}: gate wave-1 approved by alice\n", wave
    progress = await migrations.until(name, lambda p: len(p.approvals) == 2, "two approvals")
    assert [(a.gate, a.approver, a.reason) for a in progress.approvals] == [
        ("install", "alice", "values reviewed"), ("wave-1", "alice", "")]


async def test_status_shows_who_claimed_an_approval_and_which_client_sent_it(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    spec = migrations.spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]})
    await cli("start", "-f", str(spec))
    await migrations.until(name, lambda p: p.pending_gates == ["install"], "the install gate")

    # Anyone may claim to be alice; the connection names itself too, just as freely.
    approved = await cli("approve", name, "install", "--identity", "carol via jump-1")
    await migrations.until(name, lambda p: p.pending_gates == ["wave-1"], "the wave-1 gate")
    by_default = await cli("approve", name, "wave-1", CILIUM_MIGRATE_IDENTITY="")
    await migrations.until(name, lambda p: len(p.approvals) == 2, "two approvals")
    table, as_json = await asyncio.gather(cli("status", name), cli("status", name, "-o", "json"))

    assert approved.code == 0 and by_default.code == 0, (approved, by_default)
    default = f"alice@{socket.gethostname()} cilium-migrate"
    items = json.loads(as_json.out)["approvals"]["items"]
    assert [(a["gate"], a["approver"], a["client_identity"], a["update_id"]) for a in items] == [
        ("install", "alice", "carol via jump-1", "approve/install/alice"),
        ("wave-1", "alice", default, "approve/wave-1/alice")]
    rows = [line.split() for line in table.out.splitlines()]
    assert ["install", "alice", "carol", "via", "jump-1"] in [row[:5] for row in rows]
    assert ["wave-1", "alice", *default.split()] in [row[:4] for row in rows]


async def test_pause_and_resume_are_refused_when_they_change_nothing(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates, "a gate")

    not_paused = await cli("resume", name)
    paused = await cli("pause", name, "--reason", "change freeze")
    again = await cli("pause", name)
    shown = await cli("status", name)
    resumed = await cli("resume", name)

    assert not_paused.code == 2, not_paused
    assert not_paused.err == "error: resume refused: the migration is neither paused nor halted\n"
    assert paused.code == 0 and paused.out.startswith(f"{name}: paused"), paused
    assert again.code == 2 and again.err == ("error: pause refused: the migration is already "
                                              "paused\n"), again
    assert "(paused)" in shown.out.splitlines()[0]
    assert resumed.code == 0 and resumed.out == f"{name}: resumed\n", resumed
    assert not (await migrations.until(name, lambda p: not p.paused, "resumed")).paused


async def test_a_blocked_node_takes_a_decision(cli: Cli, migrations: Migrations,
                                               fake: FakeCluster) -> None:
    fake.drain_blocked.add("worker-1")
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))
    await migrations.until(name, lambda p: p.nodes and
                           p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked drain")

    shown, not_blocked, no_node = await asyncio.gather(
        cli("status", name), cli("decide", name, "worker-2", "retry"),
        cli("decide", name, "worker-9", "skip"))
    fake.drain_blocked.clear()
    decided = await cli("decide", name, "worker-1", "retry", "--reason", "PDB relaxed")

    assert "Node worker-1 waits for a decision: drain: pod t/db-0 blocked by PDB" in shown.out
    assert f"cilium-migrate decide {name} worker-1 retry|rollback|skip" in shown.out
    assert not_blocked.code == 2, not_blocked
    assert not_blocked.err == ("error: decide refused: node worker-2 is pending, not waiting "
                               "for a decision\n")
    assert no_node.code == 2 and "no node 'worker-9'" in no_node.err, no_node
    assert decided.code == 0 and decided.out == f"{name}: node worker-1: retry\n", decided
    await migrations.until(name, lambda p: p.nodes["worker-1"].state is NodeState.MIGRATED,
                           "worker-1 migrated after the retry")
    assert fake.calls[("drain", "worker-1")] == 2


async def test_requests_to_unknown_or_unreachable_migrations(
        cli: Cli, migrations: Migrations) -> None:
    *unknown, unreachable = await asyncio.gather(
        cli("approve", "nope-x", "install"), cli("pause", "nope-x"), cli("resume", "nope-x"),
        cli("decide", "nope-x", "worker-1", "skip"),
        cli("approve", "x", "install", "--address", UNREACHABLE_ADDRESS))
    for result in unknown:
        assert result.code == 4, result
        assert result.err.startswith("error: no migration of cluster nope-x"), result
    assert unreachable.code == 3 and unreachable.err.count("\n") == 1, unreachable
