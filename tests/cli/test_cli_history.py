"""`history export` and `replay`: a saved run replays against today's workflow code, and a
history that this code would not have produced fails with the reason, exit 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.cli.conftest import Cli, Migrations


async def test_export_then_replay_and_a_tampered_history_fails(
        cli: Cli, migrations: Migrations, tmp_path: Path) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))
    await migrations.handle(name).result()
    saved = tmp_path / "history.json"

    exported = await cli("history", "export", name, "-o", str(saved))

    assert exported.code == 0, exported
    assert f"of cilium-migrate/{name}" in exported.out
    data = json.loads(saved.read_text())
    assert data["workflow_id"] == f"cilium-migrate/{name}"
    # A workflow changed since the run: it would now schedule another activity first.
    tampered = tmp_path / "tampered.json"
    tampered.write_text(saved.read_text().replace('"discover_cluster"', '"discover_nodes"'))
    # The same history under another workflow ID: the node workflows' IDs would differ.
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps({**data, "workflow_id": "cilium-migrate/elsewhere"}))

    replayed, diverged, wrong_id = await asyncio.gather(
        cli("replay", str(saved)), cli("history", "replay", str(tampered)),
        cli("replay", str(moved)))

    assert replayed.code == 0, replayed
    assert replayed.out == f"{saved}: replays cleanly (cilium-migrate/{name})\n"
    assert diverged.code == 2, diverged
    assert diverged.err.splitlines()[-1] == (
        f"error: replay of {tampered} failed (nondeterminism): [TMPRL1100] Nondeterminism "
        "error: Activity type of scheduled event 'discover_nodes' does not match activity "
        "type of activity command 'discover_cluster'")
    assert "Traceback" not in diverged.err
    assert wrong_id.code == 2 and "nondeterminism" in wrong_id.err, wrong_id


async def test_bare_temporal_cli_json_replays_with_the_id_from_its_first_event(
        cli: Cli, migrations: Migrations, tmp_path: Path) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates, "a gate")
    history = await migrations.handle(name).fetch_history()
    bare = tmp_path / "bare.json"
    bare.write_text(history.to_json())  # what `temporal workflow show -o json` writes

    result = await cli("replay", str(bare))

    assert result.code == 0, result


async def test_history_errors(cli: Cli, migrations: Migrations, tmp_path: Path) -> None:
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")

    unknown, broken, no_events, missing = await asyncio.gather(
        cli("history", "export", "nope-z", "-o", str(tmp_path / "h.json")),
        cli("replay", str(not_json)), cli("replay", str(empty)),
        cli("replay", str(tmp_path / "missing.json")))

    assert unknown.code == 4, unknown
    for result in (broken, no_events, missing):
        assert result.code == 1 and result.err.count("\n") == 1, result
    assert "is not a Temporal history (no events)" in no_events.err
