"""`abort`: cancels the run; with --wait, names the nodes the cancellation uncordoned."""

from __future__ import annotations

import asyncio

from tests.cli.conftest import Cli, Migrations
from tests.fakes import FakeCluster
from workflows.progress import NodeState


async def test_abort_waits_and_names_the_nodes_it_uncordoned(
        cli: Cli, migrations: Migrations, fake: FakeCluster) -> None:
    fake.drain_blocked.add("worker-1")
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "none"})))
    await migrations.until(name, lambda p: p.nodes and
                           p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked drain")
    assert fake.cordoned == {"worker-1"}  # the canary, cordoned, its drain blocked by a PDB

    result = await cli("abort", name, "--wait")

    assert result.code == 0, result
    assert result.out.splitlines()[1:] == ["The migration ended: canceled.",
                                           "Uncordoned: worker-1"]
    assert not fake.cordoned
    again = await cli("abort", name)
    assert again.code == 2, again
    assert again.err == f"error: the migration of cluster {name} has ended (canceled)\n"
    shown = await cli("status", name)
    assert "phase cancelled" in shown.out and "Error: aborted by the operator" in shown.out


async def test_abort_without_wait_and_of_an_unknown_cluster(
        cli: Cli, migrations: Migrations) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))

    result, unknown = await asyncio.gather(cli("abort", name), cli("abort", "nope-y"))

    assert result.code == 0, result
    assert f"Follow it with: cilium-migrate status {name} --watch" in result.out
    assert (await migrations.until(name, lambda p: p.phase.value == "cancelled", "the abort"))
    assert unknown.code == 4, unknown
