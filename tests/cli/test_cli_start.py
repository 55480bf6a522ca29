"""`start`: a migration is started once per cluster; starting it again attaches."""

from __future__ import annotations

from typing import Any

from tests.cli.conftest import UNREACHABLE_ADDRESS, Cli, Migrations
from worker.build import TASK_QUEUE
from workflows.identity import CLUSTER_ATTRIBUTE, PHASE_ATTRIBUTE


async def test_start_prints_the_workflow_and_the_next_command(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    spec = migrations.spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]})

    result = await cli("start", "-f", str(spec))

    assert result.code == 0, result
    assert f"Started the migration of cluster {name}." in result.out
    assert f"workflow  cilium-migrate/{name}" in result.out
    assert f"Next: cilium-migrate status {name} --watch" in result.out
    description = await migrations.handle(name).describe()
    assert description.task_queue == TASK_QUEUE
    assert description.typed_search_attributes.get(CLUSTER_ATTRIBUTE) == name
    assert description.typed_search_attributes.get(PHASE_ATTRIBUTE) is not None
    await migrations.until(name, lambda p: p.pending_gates == ["install"], "the install gate")


async def test_starting_again_attaches_to_the_running_migration(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    spec = migrations.spec(name, approvals={"policy": "per-wave"})
    first = await cli("start", "-f", str(spec))
    run_id = first.out.split("run       ")[1].split()[0]

    again = await cli("start", "-f", str(spec))

    assert again.code == 0, again
    assert "already running; attached to it (nothing new was started)" in again.out
    assert run_id in again.out
    assert again.err == ""
    other = migrations.spec(name, approvals={"policy": "per-node"})
    different = await cli("start", "-f", str(other))
    assert different.code == 0, different
    assert "different spec" in different.err and "not applied" in different.err
    assert (await migrations.handle(name).describe()).run_id == run_id


async def test_a_bad_spec_is_one_line_and_exit_1(cli: Cli, migrations: Migrations,
                                                 tmp_path: Any) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("cluster: {name: Not_A_DNS_Label}\nrollout: {maxUnavailable: 0}\n")

    result = await cli("start", "-f", str(spec))

    assert result.code == 1, result
    assert result.err.startswith("error: ") and "Traceback" not in result.err
    missing = await cli("start", "-f", str(tmp_path / "missing.yaml"))
    assert missing.code == 1 and missing.err.count("\n") == 1, missing


async def test_start_without_a_server_is_exit_3(cli: Cli, migrations: Migrations) -> None:
    spec = migrations.spec(migrations.name())

    result = await cli("start", "-f", str(spec), "--address", UNREACHABLE_ADDRESS)

    assert result.code == 3, result
    assert result.err == f"error: cannot reach Temporal at {UNREACHABLE_ADDRESS}: " \
                         "connection refused\n"
