"""The text of `fleet status`: the fleet at a glance, then a row per cluster.

Per stage: its state, how many clusters at once, its soak (time left while soaking). Per
cluster: what the fleet made of it (pending, running, completed, failed...) beside what the
cluster's own migration says (phase, nodes migrated of all, gates it waits at, why it is
halted). What the operator can do next is spelt out as the command to run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from client.fleets import ClusterReading, ListedFleet
from client.rendering import table
from plan.duration import format_duration
from workflows.fleet_progress import FleetProgress, StageProgress, StageState

NOTE_WIDTH = 80


def render_fleet(fleet: FleetProgress, clusters: dict[str, ClusterReading], now: datetime,
                 connection: str = "") -> str:
    command = f"cilium-migrate{connection}"
    out = [_headline(fleet)]
    if fleet.paused:
        out.append(f"PAUSED: no new cluster or stage starts; `{command} fleet resume "
                   f"{fleet.fleet}` goes on.")
    if fleet.halted:
        out.append(f"HALTED: {fleet.halted}")
        out += [f"  `{command} fleet decide {fleet.fleet} {c.name} retry` (or skip)"
                for c in fleet.clusters.values() if c.waiting_for_decision]
        out += [f"  `{command} status {c.name}`, then `decide` or `resume` there"
                for c in fleet.clusters.values() if c.halted is not None]
    for gate in fleet.pending_gates:
        out.append(f"Waiting for approval: {gate} -> `{command} fleet approve {fleet.fleet} "
                   f"{gate}`")
    if fleet.error:
        out.append(f"Error: {fleet.error}")
    out += ["", table([[f"{s.index} {s.name}", s.state.value, str(len(s.clusters)),
                        str(s.concurrency), _soak(s, now)] for s in fleet.stages],
                      ["stage", "state", "clusters", "at once", "soak"])]
    rows = []
    for stage in fleet.stages:
        for name in stage.clusters:
            record = fleet.clusters[name]
            reading = clusters.get(name, ClusterReading())
            rows.append([f"{stage.index} {stage.name}", name, record.state.value
                         + (f" (try {record.attempts})" if record.attempts > 1 else ""),
                         *_cluster_columns(reading), _note(record.error, reading)])
    out += ["", table(rows, ["stage", "cluster", "fleet", "phase", "nodes", "gates", "note"])]
    out += ["", f"Each cluster: `{command} status CLUSTER` (approve, decide, pause as for any "
            "migration)."]
    return "\n".join(out)


def _headline(fleet: FleetProgress) -> str:
    where = ""
    if fleet.current_stage is not None and not fleet.phase.ended:
        stage = fleet.stages[fleet.current_stage - 1]
        where = f", stage {stage.index} of {len(fleet.stages)} ({stage.name})"
    done = sum(c.state.value == "completed" for c in fleet.clusters.values())
    return (f"Fleet {fleet.fleet}: {fleet.phase.value}{where}; {done} of {len(fleet.clusters)} "
            "clusters migrated")


def _soak(stage: StageProgress, now: datetime) -> str:
    if not stage.soak_seconds:
        return "-"
    soak = format_duration(timedelta(seconds=stage.soak_seconds))
    if stage.state is StageState.SOAKING and stage.soak_ends_at is not None:
        left = max(timedelta(0), stage.soak_ends_at - now)
        return f"{soak}, {format_duration(timedelta(seconds=int(left.total_seconds())))} left"
    return soak + (" (done)" if stage.state is StageState.DONE else "")


def _cluster_columns(reading: ClusterReading) -> list[str]:
    summary = reading.summary
    if summary is None:
        return ["-", "-", "-"]
    migrated = summary.counts.get("migrated", 0)
    gates = ", ".join(summary.pending_gates.items) or "-"
    return [summary.phase.value + (" (paused)" if summary.paused else ""),
            f"{migrated}/{summary.nodes}", gates]


def _note(error: str | None, reading: ClusterReading) -> str:
    summary = reading.summary
    # A missing worker explains a halt or a stall, so it comes before them.
    note = error or reading.problem or (summary.halted if summary else None) or ""
    note = " ".join(note.split())
    return note if len(note) <= NOTE_WIDTH else note[:NOTE_WIDTH - 3] + "..."


def render_fleet_list(listed: list[ListedFleet]) -> str:
    rows = [[f.name, f.status, f.stage or "-",
             f.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), f.workflow_id]
            for f in listed]
    return (table(rows, ["fleet", "status", "stage", "started", "workflow"]) if rows
            else "No fleets.")
