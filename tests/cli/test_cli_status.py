"""`status`: the migration's own account, as a table for people and JSON/YAML for programs."""

from __future__ import annotations

import asyncio
import json

import yaml

from tests.cli.conftest import UNREACHABLE_ADDRESS, Cli, Migrations
from tests.fakes import FakeCluster
from workflows.progress import NodeState, Phase
from workflows.progress_summary import ProgressSummary, summarize


async def test_status_table_shows_waves_nodes_and_the_approve_command(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates == ["install"], "the install gate")

    result = await cli("status", name)

    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].startswith(f"Cluster {name}   phase preflight   elapsed ")
    assert f"cilium-migrate approve {name} install --reason '...'" in result.out
    assert "WAVE  KIND" in result.out and "canary" in result.out
    header = next(line for line in lines if line.startswith("NODE"))
    assert header.split() == ["NODE", "WAVE", "STATE", "STEP", "ELAPSED", "BLOCKER"]
    assert any(line.split()[:3] == ["worker-1", "1", "pending"] for line in lines)
    assert "Current wave 1 (canary, zone zone-a): pending; 1 pending" in lines


async def test_status_json_is_the_summary_and_yaml_parses(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    full = await migrations.until(name, lambda p: p.pending_gates, "a gate")

    as_json, as_yaml = await asyncio.gather(cli("status", name, "-o", "json"),
                                            cli("status", name, "--output", "yaml"))

    assert as_json.code == 0 and as_yaml.code == 0, (as_json, as_yaml)
    summary = ProgressSummary.model_validate(json.loads(as_json.out))
    assert summary == summarize(full)
    assert summary.counts == full.counts() and summary.nodes == len(full.nodes)
    assert json.loads(as_json.out)["waves"][0]["nodes"] == 1  # a count, not names
    assert ProgressSummary.model_validate(yaml.safe_load(as_yaml.out)) == summary


async def test_watch_follows_the_run_to_its_end(cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))

    result = await cli("status", name, "--watch", "--interval", "0.2", timeout=60)

    assert result.code == 0, result
    frames = result.out.split(f"Cluster {name}   phase ")
    assert len(frames) >= 2  # piped: each changed frame is appended
    assert frames[-1].startswith("completed")
    assert "\x1b[" not in result.out  # no terminal control codes into a pipe
    final = await migrations.handle(name).result()
    assert final.phase is Phase.COMPLETED
    assert set(final.counts()) == {NodeState.MIGRATED.value}


async def test_status_without_a_cluster_uses_the_one_running_migration(
        cli: Cli, migrations: Migrations) -> None:
    # Runs other test modules left open on this session's server would make "the one running
    # migration" ambiguous; this test is about choosing among this server's runs, so it ends them.
    await migrations.end_others()
    first, second = migrations.name(), migrations.name()
    await cli("start", "-f", str(migrations.spec(first, approvals={"policy": "per-wave"})))

    # Visibility is eventually consistent: wait for it to list exactly this run.
    for _ in range(20):
        only = await cli("status", "-o", "json")
        if only.code == 0:
            break
    assert only.code == 0, only
    assert ProgressSummary.model_validate(json.loads(only.out)).cluster == first

    await cli("start", "-f", str(migrations.spec(second, approvals={"policy": "per-wave"})))
    for _ in range(20):
        several = await cli("status")
        if several.code == 1:
            break
    assert several.code == 1, several
    assert "migrations are running" in several.err and first in several.err
    assert second in several.err and "name the cluster" in several.err


async def test_unknown_cluster_is_exit_4_and_no_server_exit_3(
        cli: Cli, migrations: Migrations) -> None:
    unknown, unreachable = await asyncio.gather(
        cli("status", "no-such-cluster"), cli("status", "x", "--address", UNREACHABLE_ADDRESS))

    assert unknown.code == 4, unknown
    assert unknown.err == ("error: no migration of cluster no-such-cluster (workflow "
                           "cilium-migrate/no-such-cluster) in namespace default\n")
    assert unreachable.code == 3, unreachable
    assert unreachable.err.count("\n") == 1 and "cannot reach Temporal" in unreachable.err


async def test_without_a_worker_status_and_requests_say_so(cli: Cli,
                                                            migrations: Migrations) -> None:
    name = migrations.name()
    queue = f"nobody-{name}"
    started = await cli("start", "-f", str(migrations.spec(name)), "--task-queue", queue)
    assert started.code == 0, started

    status, approve = await asyncio.gather(
        cli("status", name, CILIUM_MIGRATE_ANSWER_TIMEOUT="2"),
        cli("approve", name, "install", CILIUM_MIGRATE_ANSWER_TIMEOUT="2"))

    for result, what in ((status, "the progress query"),
                         (approve, "the approve request (id approve/install/alice, safe "
                                   "to repeat)")):
        assert result.code == 3, result
        assert result.err == (f"error: no worker answered {what} within 2s; is `cilium-migrate "
                              f"worker` running on task queue {queue}?\n")


async def test_status_shows_a_running_nodes_step_read_from_its_own_workflow(
        cli: Cli, migrations: Migrations, fake: FakeCluster) -> None:
    # The parent hears from a node only when it ends or is blocked: the live step comes from
    # the node's workflow, and both the default view and the node pages must show it.
    fake.hold_drain = asyncio.Event()
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))
    await asyncio.wait_for(fake.hold_drain.wait(), timeout=60)

    for args in (("status", name), ("status", name, "--nodes", "running")):
        result = await cli(*args)
        assert result.code == 0, result
        rows = [line.split() for line in result.out.splitlines()]
        assert ["worker-1", "1", "running", "drain"] in [row[:4] for row in rows], result.out
