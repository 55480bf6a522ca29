"""`cilium-migrate fleet ...` as an operator runs it: start (and attach), status, a stage's
approval, a failed cluster's retry, pause and resume, and one clear line for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.service import RPCError

from client import exit_codes
from tests.cli.conftest import Cli
from tests.fakes import FakeCluster
from workflows.fleet import FleetMigrationWorkflow
from workflows.fleet_progress import FleetProgress
from workflows.identity import fleet_workflow_id


async def fleet_until(client: Any, name: str, check: Any, what: str) -> FleetProgress:
    handle = client.get_workflow_handle_for(FleetMigrationWorkflow.run, fleet_workflow_id(name))
    for _ in range(1200):
        current: FleetProgress = await handle.query(FleetMigrationWorkflow.get_progress)
        if check(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fleet never reached: {what}; last: {current.model_dump_json()}")


async def test_an_operator_runs_a_fleet_through_a_failure(
        cli: Cli, fake: FakeCluster, temporal_env: Any, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, dev, staging, prod = (f"{n}-{suffix}" for n in ("fleet", "dev", "staging", "prod"))
    fake.unreachable.add(staging)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "defaults": {"approvals": {"policy": "none"}},
        "clusters": [{"name": dev, "labels": {"env": "dev"}},
                     {"name": staging, "labels": {"env": "prod"}},
                     {"name": prod, "labels": {"env": "prod"}}],
        "stages": [{"name": "dev", "clusters": [dev]},
                   {"name": "prod", "selector": {"env": "prod"}, "concurrency": 2,
                    "approval": True}]}))
    try:
        started = await cli("fleet", "start", str(path))
        again = await cli("fleet", "start", str(path))
        assert started.code == 0 and f"Started fleet {name}: dev ({dev})" in started.out, started
        assert again.code == 0 and "already running; attached" in again.out, again

        await fleet_until(temporal_env.client, name, lambda p: p.pending_gates == ["stage-2"],
                          "stage-2's gate")
        waiting = await cli("fleet", "status", name)
        assert waiting.code == 0, waiting
        assert (f"Waiting for approval: stage-2 -> `cilium-migrate fleet approve {name} "
                "stage-2`") in waiting.out
        assert f"1 dev   {dev}" in waiting.out and "completed  3/3" in waiting.out, waiting
        wrong = await cli("fleet", "approve", name, "stage-3")
        assert wrong.code == exit_codes.BLOCKED and "no gate 'stage-3'" in wrong.err, wrong
        approved = await cli("fleet", "approve", name, "stage-2", "--reason", "dev is fine")
        assert approved.out == f"fleet {name}: gate stage-2 approved by alice\n", approved

        await fleet_until(temporal_env.client, name, lambda p: p.halted is not None, "a halt")
        as_json = json.loads((await cli("fleet", "status", name, "-o", "json")).out)
        assert as_json["fleet"]["clusters"][staging]["state"] == "failed"
        assert as_json["clusters"][dev]["phase"] == "completed"
        halted = await cli("fleet", "status", name)
        assert f"`cilium-migrate fleet decide {name} {staging} retry` (or skip)" in halted.out
        not_waiting = await cli("fleet", "decide", name, dev, "retry")
        assert not_waiting.code == exit_codes.BLOCKED, not_waiting
        assert "not waiting for a decision" in not_waiting.err

        paused = await cli("fleet", "pause", name)
        twice = await cli("fleet", "pause", name)
        resumed = await cli("fleet", "resume", name)
        assert paused.code == 0 and "no new cluster or stage starts" in paused.out, paused
        assert twice.code == exit_codes.BLOCKED and "already paused" in twice.err, twice
        assert resumed.code == 0 and "still halted" in resumed.out, resumed

        fake.unreachable.clear()
        retried = await cli("fleet", "decide", name, staging, "retry")
        assert retried.out == f"fleet {name}: cluster {staging}: retry\n", retried
        watched = await cli("fleet", "status", name, "--watch", "--interval", "0.2",
                            timeout=180)
        assert watched.code == 0, watched
        assert "completed; 3 of 3 clusters migrated" in watched.out
        assert "completed (try 2)" in watched.out

        ended = await cli("fleet", "abort", name)
        assert ended.code == exit_codes.BLOCKED and "has ended (completed)" in ended.err
        listed = await cli("fleet", "list")
        row = next(line for line in listed.out.splitlines() if line.startswith(name))
        assert row.split()[:3] == [name, "completed", "prod"], listed
        everything = await cli("list")  # the migrations, each with its fleet, then the fleets
        rows = [line.split() for line in everything.out.splitlines() if line.strip()]
        assert [dev, "completed", "completed"] == next(r for r in rows if r[0] == dev)[:3]
        assert next(r for r in rows if r[0] == dev)[-2] == name, everything
        assert next(r for r in rows if r[0] == name)[:3] == [name, "completed", "prod"]
        as_json = json.loads((await cli("list", "-o", "json")).out)
        assert {m["fleet"] for m in as_json if m["cluster"] in (dev, staging, prod)} == {name}
    finally:
        with contextlib.suppress(RPCError):  # ended already
            await temporal_env.client.get_workflow_handle(fleet_workflow_id(name)).terminate(
                "test over")


async def test_bad_input_is_one_line_and_its_exit_code(cli: Cli, tmp_path: Path) -> None:
    missing = await cli("fleet", "status", "no-such-fleet")
    unreadable = await cli("fleet", "start", str(tmp_path / "nope.yaml"))
    bad_decision = await cli("fleet", "decide", "x", "y", "maybe")

    assert missing.code == exit_codes.NOT_FOUND, missing
    assert missing.err.startswith("error: no fleet no-such-fleet (workflow "
                                  "cilium-migrate/fleet/no-such-fleet)")
    assert unreadable.code == exit_codes.INVALID_INPUT and "cannot read fleet file" in (
        unreadable.err)
    assert bad_decision.code == exit_codes.INVALID_INPUT  # a usage error is bad input
    assert "invalid choice: 'maybe'" in bad_decision.err
    assert not any("Traceback" in r.err for r in (missing, unreadable, bad_decision))
