"""`plan --fleet`: one table of every cluster's plan, built by the same planner as `plan -f`
(here over the fake cluster's facts), and clear errors for a bad fleet file."""

from __future__ import annotations

from pathlib import Path

from client import exit_codes
from client.errors import CommandError
from client.fleet_plan import plan_fleet, render_fleet_plan
from plan.fleet import load_fleet
from plan.planner import MigrationPlan, make_plan
from plan.spec import MigrationSpec
from tests.cli.conftest import cli_env, run_cli
from tests.fakes import FakeCluster

FLEET = """\
name: rollout
defaults: {rollout: {maxUnavailable: 2}}
clusters:
  - {name: dev, labels: {env: dev}}
  - {name: staging, overrides: {network: {podCIDRs: [10.244.0.0/16]}}}
  - {name: prod-eu, labels: {env: prod}}
  - {name: prod-us, labels: {env: prod}}
stages:
  - {name: dev, clusters: [dev], soak: 1h}
  - {name: staging, clusters: [staging]}
  - {name: prod, selector: {env: prod}, concurrency: 2, approval: true}
"""


def fake_plan(spec: MigrationSpec) -> MigrationPlan:
    if spec.cluster.name == "prod-us":
        raise CommandError("cannot read cluster prod-us: connection refused",
                           exit_codes.UNREACHABLE)
    return make_plan(spec, FakeCluster(workers=4).facts(), None)


def test_one_row_per_cluster_with_what_stops_it_and_the_stages_timing() -> None:
    plan = plan_fleet(load_fleet(FLEET), fake_plan)
    text = render_fleet_plan(plan)

    rows = {row.cluster: row for row in plan.clusters}
    assert [row.cluster for row in plan.clusters] == ["dev", "staging", "prod-eu", "prod-us"]
    assert rows["dev"].can_run and rows["dev"].nodes == 5 and rows["dev"].waves == 4
    assert [f.id for f in rows["staging"].blocking] == ["pod-cidr-overlaps-old-network"]
    assert rows["prod-us"].error and rows["prod-us"].exit_code == exit_codes.UNREACHABLE
    assert plan.exit_code == exit_codes.UNREACHABLE
    # dev: install 5m, 4 waves of 5m, 3 pairs of agents restarted 30s each, finalize 5m.
    assert rows["dev"].estimated_seconds == (5 + 20 + 1.5 + 5) * 60
    assert [s.estimated_seconds for s in plan.stages] == [
        (31.5 + 60) * 60, 31.5 * 60, 31.5 * 60]  # prod: two at a time, one not planned
    assert "1 dev      dev      5      4      ready" in text
    assert "staging: [pod-cidr-overlaps-old-network]" in text
    assert "prod-us: cannot read cluster prod-us: connection refused" in text
    assert "waits for `cilium-migrate fleet approve rollout stage-3`" in text
    assert text.splitlines()[-1].startswith("NOT READY")


async def test_a_bad_fleet_file_is_one_clear_error(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: rollout\nclusters: [{name: a}]\nstages: [{clusters: [b]}]\n")
    env = cli_env("127.0.0.1:1")

    bad = await run_cli("plan", "--fleet", str(fleet), env=env)
    missing = await run_cli("plan", "--fleet", str(tmp_path / "nope.yaml"), env=env)
    both = await run_cli("plan", "--fleet", str(fleet), "-f", str(fleet), env=env)

    assert bad.code == exit_codes.INVALID_INPUT, bad
    assert f"{fleet}:3: stages[0].clusters[0]: unknown cluster 'b'" in bad.err
    assert "Traceback" not in bad.err
    assert missing.code == exit_codes.INVALID_INPUT and "cannot read fleet file" in missing.err
    assert both.code == exit_codes.INVALID_INPUT and "not allowed with argument" in both.err
