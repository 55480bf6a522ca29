"""`list`: every migration in the namespace, from visibility, with counts from running ones."""

from __future__ import annotations

import json

import yaml

from tests.cli.conftest import Cli, Migrations


async def test_list_shows_running_and_ended_migrations(cli: Cli, migrations: Migrations) -> None:
    running, ended = migrations.name(), migrations.name()
    await cli("start", "-f", str(migrations.spec(running, approvals={"policy": "per-wave"})))
    await cli("start", "-f", str(migrations.spec(ended, approvals={"policy": "per-wave"})))
    await migrations.until(running, lambda p: p.pending_gates == ["install"], "install gate")
    await migrations.until(ended, lambda p: p.pending_gates == ["install"], "install gate")
    await cli("abort", ended, "--wait")

    # Visibility is eventually consistent; wait (by asking again) until it shows both runs
    # as they are now.
    for _ in range(20):
        listed = await cli("list", "-o", "json")
        rows = {row["cluster"]: row for row in json.loads(listed.out or "[]")}
        if rows.get(ended, {}).get("status") == "canceled" and running in rows:
            break
    assert listed.code == 0, listed
    assert rows[running]["status"] == "running"
    assert rows[running]["workflowId"] == f"cilium-migrate/{running}"
    assert rows[running]["nodes"] == {"pending": 3}
    assert rows[running]["pendingGates"] == ["install"]
    assert rows[ended]["phase"] == "cancelled" and rows[ended]["nodes"] is None

    table = await cli("list")
    line = next(line for line in table.out.splitlines() if line.startswith(running + " "))
    assert line.split()[:3] == [running, "running", "preflight"]
    assert "3 pending" in line and "install" in line
    as_yaml = yaml.safe_load((await cli("list", "--running", "-o", "yaml")).out)
    assert running in {row["cluster"] for row in as_yaml}
    assert ended not in {row["cluster"] for row in as_yaml}
