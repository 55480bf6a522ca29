"""`cilium-migrate plan --fleet FILE`: every cluster's plan, one table for the fleet.

Each cluster is planned exactly as `plan -f SPEC` plans it (discovery with its own context,
the chart's verdict, preflight, waves); a cluster that cannot be read is a row saying why, not
the end of the fleet's plan.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel

from client import exit_codes
from client.errors import CommandError
from client.rendering import table
from plan.duration import format_duration
from plan.estimate import migration_duration, stage_duration
from plan.findings import Finding, blocking
from plan.fleet import Fleet
from plan.planner import MigrationPlan
from plan.spec import MigrationSpec


class ClusterPlanRow(BaseModel):
    stage: int
    cluster: str
    nodes: int | None = None
    waves: int | None = None
    can_run: bool = False
    blocking: list[Finding] = []
    warnings_to_acknowledge: list[str] = []
    estimated_seconds: float | None = None  # without approval waits
    error: str | None = None  # the cluster could not be planned
    exit_code: int = exit_codes.OK


class StagePlan(BaseModel):
    index: int
    name: str
    clusters: list[str]
    concurrency: int
    soak_seconds: float
    approval: bool
    estimated_seconds: float  # its clusters, as many at once as allowed, and its soak


class FleetPlan(BaseModel):
    fleet: str
    stages: list[StagePlan]
    clusters: list[ClusterPlanRow]
    estimated_seconds: float  # every stage in turn, without approval waits

    @property
    def exit_code(self) -> int:
        """The worst of the clusters': unreachable (3) over blocked (2) over ready (0)."""
        codes = [row.exit_code for row in self.clusters]
        for code in (exit_codes.UNREACHABLE, exit_codes.BLOCKED, exit_codes.INVALID_INPUT):
            if code in codes:
                return code
        return exit_codes.OK


def plan_fleet(fleet: Fleet, plan_cluster: Callable[[MigrationSpec], MigrationPlan]
               ) -> FleetPlan:
    rows = []
    for stage in fleet.stages:
        for cluster in stage.clusters:
            rows.append(_row(stage.index, cluster, fleet.spec_of(cluster), plan_cluster))
    by_cluster = {row.cluster: row for row in rows}
    stages = []
    for stage in fleet.stages:
        durations = [timedelta(seconds=by_cluster[c].estimated_seconds or 0)
                     for c in stage.clusters]
        took = stage_duration(durations, stage.concurrency,
                              timedelta(seconds=stage.soak_seconds))
        stages.append(StagePlan(index=stage.index, name=stage.name, clusters=stage.clusters,
                                concurrency=stage.concurrency, soak_seconds=stage.soak_seconds,
                                approval=stage.approval,
                                estimated_seconds=took.total_seconds()))
    return FleetPlan(fleet=fleet.name, stages=stages, clusters=rows,
                     estimated_seconds=sum(s.estimated_seconds for s in stages))


def _row(stage: int, cluster: str, spec: MigrationSpec,
         plan_cluster: Callable[[MigrationSpec], MigrationPlan]) -> ClusterPlanRow:
    try:
        plan = plan_cluster(spec)
    except CommandError as error:
        return ClusterPlanRow(stage=stage, cluster=cluster, error=str(error),
                              exit_code=error.exit_code)
    return ClusterPlanRow(
        stage=stage, cluster=cluster, nodes=plan.facts.nodes, waves=len(plan.waves),
        can_run=plan.can_run, blocking=blocking(plan.findings),
        warnings_to_acknowledge=plan.warnings_to_acknowledge,
        estimated_seconds=migration_duration(plan).total_seconds(),
        exit_code=exit_codes.OK if plan.can_run else exit_codes.BLOCKED)


def render_fleet_plan(plan: FleetPlan) -> str:
    names = {stage.index: stage.name for stage in plan.stages}
    rows = [[f"{row.stage} {names[row.stage]}", row.cluster, _count(row.nodes),
             _count(row.waves), _verdict(row), _took(row.estimated_seconds)]
            for row in plan.clusters]
    out = [f"Fleet {plan.fleet}: {len(plan.clusters)} clusters in {len(plan.stages)} stages",
           "", table(rows, ["stage", "cluster", "nodes", "waves", "plan", "estimated"])]
    stopped = [row for row in plan.clusters if row.blocking or row.error]
    if stopped:
        out += ["", "What stops a cluster:"]
        for row in stopped:
            if row.error:
                out.append(f"  {row.cluster}: {row.error}")
            out += [f"  {row.cluster}: [{f.id}] {f.message}" + (f" ({f.remedy})" if f.remedy
                                                                  else "")
                    for f in row.blocking]
    out += ["", "Stages, in order:"]
    out += [f"  {s.index} {s.name}: {', '.join(s.clusters)}; {s.concurrency} at a time"
            + (f"; soak {_took(s.soak_seconds)}" if s.soak_seconds else "")
            + ("; waits for `cilium-migrate fleet approve " + plan.fleet + f" stage-{s.index}`"
               if s.approval else "")
            + f"; about {_took(s.estimated_seconds)}" for s in plan.stages]
    out += ["", f"Estimated: about {_took(plan.estimated_seconds)} without approval waits "
            "(5 min per wave, agents restarted two at a time at finalize)."]
    if plan.exit_code == exit_codes.OK:
        out.append(f"Ready: `cilium-migrate fleet start FILE` runs fleet {plan.fleet}.")
    else:
        out.append("NOT READY: fix what stops the clusters above before starting the fleet.")
    return "\n".join(out)


def _verdict(row: ClusterPlanRow) -> str:
    if row.error:
        return "not planned"
    if row.blocking:
        return f"blocked ({len(row.blocking)} finding{'s' * (len(row.blocking) > 1)})"
    if row.warnings_to_acknowledge:
        return "ready after acknowledging " + ", ".join(row.warnings_to_acknowledge)
    return "ready"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    # Minutes are precise enough for a calendar.
    return format_duration(timedelta(minutes=round(seconds / 60))) if seconds >= 60 else (
        format_duration(timedelta(seconds=round(seconds))) if seconds else "0s")
