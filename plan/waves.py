"""The wave plan: which nodes migrate together, and in what order.

Workers go first, starting with a small canary wave, then in waves no larger than the rollout's
disruption budget (maxUnavailable). Control-plane nodes go last, one at a time, so the API server
keeps a quorum and is never the first thing a new CNI touches. The same spec and facts always give
the same plan, whatever order discovery listed the nodes in.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from plan.facts import ClusterFacts, NodeFacts
from plan.spec import MigrationSpec

WaveKind = Literal["canary", "workers", "control-plane"]


class Wave(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=1)  # 1-based, as operators count ("approve wave 3")
    kind: WaveKind
    nodes: list[str] = Field(min_length=1)
    zone: str | None = None  # set when every node of the wave is in this zone


class PlanError(ValueError):
    """The rollout settings do not fit the discovered cluster."""


def plan_waves(spec: MigrationSpec, facts: ClusterFacts) -> list[Wave]:
    """Order every node not excluded into waves: canary, workers, then control planes."""
    rollout = spec.rollout
    _check_names(spec, facts)
    excluded = set(rollout.exclude_nodes)
    eligible = [node for node in facts.nodes if node.name not in excluded]
    workers = _ordered(
        [node for node in eligible if not node.control_plane],
        rollout.first_nodes,
        rollout.last_nodes,
    )
    control_planes = _ordered(
        [node for node in eligible if node.control_plane], [], rollout.last_nodes
    )
    budget = wave_budget(spec, len(workers))

    groups: list[tuple[WaveKind, list[NodeFacts]]] = []
    if workers:
        # The canary respects the disruption budget too; preflight warns when that shrinks it.
        canary, rest = _take_canary(
            workers, min(rollout.canary_size, budget), rollout.one_zone_at_a_time
        )
        groups.append(("canary", canary))
        groups.extend(
            ("workers", chunk) for chunk in _chunk(rest, budget, rollout.one_zone_at_a_time)
        )
    groups.extend(("control-plane", [node]) for node in control_planes)

    return [
        Wave(index=index, kind=kind, nodes=[node.name for node in nodes], zone=_common_zone(nodes))
        for index, (kind, nodes) in enumerate(groups, start=1)
    ]


def excluded_nodes(spec: MigrationSpec, facts: ClusterFacts) -> list[str]:
    """Nodes the plan leaves out on purpose (rollout.excludeNodes), in the spec's order."""
    _check_names(spec, facts)
    return list(spec.rollout.exclude_nodes)


def wave_budget(spec: MigrationSpec, eligible_workers: int) -> int:
    """How many nodes one wave may take: maxUnavailable as a count, or a percentage of the
    eligible workers rounded down, and never less than one."""
    limit = spec.rollout.max_unavailable
    if isinstance(limit, int):
        return limit
    percent = int(limit.rstrip("%"))
    return max(1, eligible_workers * percent // 100)


def _check_names(spec: MigrationSpec, facts: ClusterFacts) -> None:
    known = {node.name: node for node in facts.nodes}
    problems = []
    for key, names in (
        ("firstNodes", spec.rollout.first_nodes),
        ("lastNodes", spec.rollout.last_nodes),
        ("excludeNodes", spec.rollout.exclude_nodes),
    ):
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"rollout.{key}: no node named {name!r} in the cluster{hint}")
    for name in spec.rollout.first_nodes:
        if name in known and known[name].control_plane:
            problems.append(
                f"rollout.firstNodes: {name} is a control-plane node; control-plane nodes "
                "always migrate last"
            )
    if problems:
        raise PlanError("; ".join(problems))


def _ordered(nodes: list[NodeFacts], first: Sequence[str], last: Sequence[str]) -> list[NodeFacts]:
    """firstNodes in the spec's order, then the rest by zone and name, then lastNodes."""
    by_name = {node.name: node for node in nodes}
    head = [by_name[name] for name in first if name in by_name]
    tail = [by_name[name] for name in last if name in by_name]
    pinned = {node.name for node in head + tail}
    middle = sorted(
        (node for node in nodes if node.name not in pinned),
        key=lambda node: (node.zone or "", node.name),
    )
    return head + middle + tail


def _take_canary(
    workers: list[NodeFacts], size: int, one_zone: bool
) -> tuple[list[NodeFacts], list[NodeFacts]]:
    if not one_zone:
        return workers[:size], workers[size:]
    # The canary stays in the first node's zone; the others keep their order for later waves.
    zone = workers[0].zone
    canary = [node for node in workers if node.zone == zone][:size]
    chosen = {node.name for node in canary}
    return canary, [node for node in workers if node.name not in chosen]


def _chunk(nodes: list[NodeFacts], budget: int, one_zone: bool) -> list[list[NodeFacts]]:
    chunks: list[list[NodeFacts]] = []
    for node in nodes:
        current = chunks[-1] if chunks else None
        if current is None or len(current) >= budget or (one_zone and node.zone != current[0].zone):
            chunks.append([node])
        else:
            current.append(node)
    return chunks


def _common_zone(nodes: list[NodeFacts]) -> str | None:
    zones = {node.zone for node in nodes}
    return zones.pop() if len(zones) == 1 else None
