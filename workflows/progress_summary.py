"""Bounded views of a migration's Progress: the `progress_summary` and `nodes_page` queries.

The `progress` query returns every node's full record; at thousands of nodes that nears gRPC's
4 MB message limit and makes `status` slow. The summary's size does not grow with the node
count: counts instead of records, runs of alike waves instead of every wave, and every list that
could hold one entry per node capped at `LIST_LIMIT` items with its true total beside them. Node
records themselves come a page at a time, at most `PAGE_LIMIT` per query.

Pure functions of a Progress: the workflow answers both queries with them, and the client builds
the same views from a full Progress when a run predates these queries or has completed (its
result is its final Progress).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from plan.contract import ConnectivityFigures, EchoMeshStatus, InstalledChart
from plan.findings import Finding
from workflows.progress import Approval, NodeProgress, NodeState, Phase, Progress, WaveProgress

LIST_LIMIT = 50  # items per capped list (nodes needing attention, gates, approvals, ...)
PAGE_LIMIT = 500  # node records per `nodes_page` answer, whatever the caller asks for
TEXT_LIMIT = 2000  # characters of a free-text field (a halt reason may name every node)

# Nodes an operator must look at, most urgent first: a blocked node waits for `decide`.
ATTENTION_STATES = (NodeState.BLOCKED, NodeState.FAILED, NodeState.ROLLING_BACK,
                    NodeState.ROLLED_BACK, NodeState.SKIPPED)

T = TypeVar("T")


class Capped(BaseModel, Generic[T]):
    """The first (or, for approvals, latest) ``LIST_LIMIT`` items of a list and its length."""

    total: int
    items: list[T]


class WaveRun(BaseModel):
    """Consecutive waves of the same kind and state: waves ``first``..``last``, with ``nodes``
    nodes in all, and their zone when they share one. Runs keep the wave list short when the
    plan has thousands of small waves (maxUnavailable 1 at 5,000 nodes): a new run starts only
    where the state changes (done, halted, running, pending) or the kind does."""

    first: int
    last: int
    kind: str
    zone: str | None = None
    state: str
    nodes: int
    # The monitor's figures over these waves (the sum; `worst_window` is the worst of them).
    connectivity: ConnectivityFigures | None = None


class CurrentWave(BaseModel):
    """The wave the run is in or waits for, and how far its nodes are."""

    index: int
    kind: str
    zone: str | None = None
    state: str
    nodes: int
    counts: dict[str, int]  # node state -> how many of this wave's nodes are in it
    connectivity: ConnectivityFigures | None = None


class ProgressSummary(BaseModel):
    cluster: str
    task_queue: str | None = None  # the cluster's own queue for its steps, if it names one
    phase: Phase
    started_at: datetime | None = None
    finished_at: datetime | None = None
    paused: bool = False
    halted: str | None = None
    error: str | None = None
    nodes: int  # nodes in the plan (catch-up nodes included)
    counts: dict[str, int]  # node state -> how many nodes are in it
    current_wave: CurrentWave | None = None
    waves: list[WaveRun] = Field(default_factory=list)
    blockers: Capped[str]  # every reason the run is waiting, one line each
    attention: Capped[NodeProgress]  # blocked, failed, rolling back, rolled back, skipped
    pending_gates: Capped[str]
    approvals: Capped[Approval]  # the latest ones
    findings: Capped[Finding]
    excluded_nodes: Capped[str]
    not_migrated: Capped[tuple[str, str]]  # (node, why) that finalize waits for
    chart: InstalledChart | None = None
    values_diff: list[tuple[str, Any, Any]] = Field(default_factory=list)
    echo_mesh: EchoMeshStatus | None = None
    echo_mesh_removed: bool = False
    connectivity: ConnectivityFigures | None = None  # every monitored wave's, summed


class NodesPageRequest(BaseModel):
    """Which node records to return: nodes sorted by wave and name, filtered, then sliced."""

    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=PAGE_LIMIT, ge=1)  # capped at PAGE_LIMIT by the answer
    states: list[NodeState] = Field(default_factory=list)  # empty: every state
    wave: int | None = None


class NodesPage(BaseModel):
    total: int  # nodes matching the filter, on every page
    offset: int
    limit: int  # the limit applied, after the cap
    nodes: list[NodeProgress]


def summarize(progress: Progress) -> ProgressSummary:
    nodes = progress.nodes
    attention = sorted((n for n in nodes.values() if n.state in ATTENTION_STATES),
                       key=lambda n: (ATTENTION_STATES.index(n.state), n.wave, n.name))
    blockers = [f"gate {gate} waits for approval" for gate in progress.pending_gates]
    if progress.halted:
        blockers.append(_cut(progress.halted))
    blockers += [f"node {n.name}: {_cut(n.blocker)}" for n in _by_wave(nodes.values())
                 if n.blocker]
    return ProgressSummary(
        cluster=progress.cluster, task_queue=progress.task_queue, phase=progress.phase,
        started_at=progress.started_at,
        finished_at=progress.finished_at, paused=progress.paused,
        halted=_bounded(progress.halted), error=_bounded(progress.error),
        nodes=len(nodes), counts=progress.counts(),
        current_wave=_current_wave(progress), waves=wave_runs(progress.waves),
        blockers=_first(blockers), attention=_first(attention),
        pending_gates=_first(progress.pending_gates),
        approvals=Capped(total=len(progress.approvals),
                         items=progress.approvals[-LIST_LIMIT:]),
        findings=_first(progress.findings), excluded_nodes=_first(progress.excluded_nodes),
        not_migrated=_first(list(progress.not_migrated.items())),
        chart=progress.chart, values_diff=progress.values_diff,
        echo_mesh=progress.echo_mesh, echo_mesh_removed=progress.echo_mesh_removed,
        connectivity=_sum(w.connectivity for w in progress.waves))


def nodes_page(progress: Progress, request: NodesPageRequest) -> NodesPage:
    matching = [n for n in _by_wave(progress.nodes.values())
                if (not request.states or n.state in request.states)
                and (request.wave is None or n.wave == request.wave)]
    limit = min(request.limit, PAGE_LIMIT)
    return NodesPage(total=len(matching), offset=request.offset, limit=limit,
                     nodes=matching[request.offset:request.offset + limit])


def wave_runs(waves: list[WaveProgress]) -> list[WaveRun]:
    runs: list[WaveRun] = []
    for wave in waves:
        last = runs[-1] if runs else None
        if (last is not None and last.last + 1 == wave.index
                and (last.kind, last.state) == (wave.kind, wave.state)):
            last.last, last.nodes = wave.index, last.nodes + len(wave.nodes)
            last.zone = last.zone if last.zone == wave.zone else None
            last.connectivity = _sum([last.connectivity, wave.connectivity])
        else:
            runs.append(WaveRun(first=wave.index, last=wave.index, kind=wave.kind,
                                zone=wave.zone, state=wave.state, nodes=len(wave.nodes),
                                connectivity=wave.connectivity))
    return runs


def _sum(figures: Iterable[ConnectivityFigures | None]) -> ConnectivityFigures | None:
    """None when no wave was monitored."""
    total: ConnectivityFigures | None = None
    for one in figures:
        if one is not None:
            total = one if total is None else total.plus(one)
    return total


def current_wave(progress: Progress) -> WaveProgress | None:
    """The running wave; else the halted one the run waits on; else the next to start (it may
    wait for its gate); None once every wave is done."""
    running = [w for w in progress.waves if w.state == "running"]
    if running:
        return running[0]
    started = [w for w in progress.waves if w.state != "pending"]
    if progress.halted and started and started[-1].state == "halted":
        return started[-1]
    return next((w for w in progress.waves if w.state == "pending"), None)


def _current_wave(progress: Progress) -> CurrentWave | None:
    wave = current_wave(progress)
    if wave is None:
        return None
    counts: dict[str, int] = {}
    for name in wave.nodes:
        node = progress.nodes.get(name)
        state = node.state.value if node else NodeState.PENDING.value
        counts[state] = counts.get(state, 0) + 1
    return CurrentWave(index=wave.index, kind=wave.kind, zone=wave.zone, state=wave.state,
                       nodes=len(wave.nodes), counts=counts, connectivity=wave.connectivity)


def _first(items: list[T]) -> Capped[T]:
    return Capped(total=len(items), items=items[:LIST_LIMIT])


def _bounded(text: str | None) -> str | None:
    return None if text is None else _cut(text)


def _cut(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f"... ({len(text) - TEXT_LIMIT} more characters)"


def _by_wave(nodes: Any) -> list[NodeProgress]:
    return sorted(nodes, key=lambda n: (n.wave, n.name))
