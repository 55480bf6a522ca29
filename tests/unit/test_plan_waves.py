"""The wave planner: worked examples, then properties that must hold for any cluster."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plan.facts import ClusterFacts, NodeFacts
from plan.spec import MigrationSpec
from plan.waves import PlanError, Wave, excluded_nodes, plan_waves, wave_budget

PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cluster(*nodes: NodeFacts) -> ClusterFacts:
    return ClusterFacts(nodes=list(nodes))


def worker(name: str, zone: str | None = None) -> NodeFacts:
    return NodeFacts(name=name, zone=zone)


def control_plane(name: str, zone: str | None = None) -> NodeFacts:
    return NodeFacts(name=name, zone=zone, control_plane=True)


def spec(**rollout: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": "c"}, "rollout": rollout})


def layout(waves: list[Wave]) -> list[tuple[str, list[str]]]:
    return [(wave.kind, wave.nodes) for wave in waves]


def test_canary_then_workers_then_control_planes_one_by_one() -> None:
    nodes = [control_plane("cp-b"), worker("w3"), control_plane("cp-a"), worker("w1"), worker("w2")]
    facts = cluster(*nodes)
    waves = plan_waves(spec(maxUnavailable=2), facts)
    assert layout(waves) == [
        ("canary", ["w1"]),
        ("workers", ["w2", "w3"]),
        ("control-plane", ["cp-a"]),
        ("control-plane", ["cp-b"]),
    ]
    assert [wave.index for wave in waves] == [1, 2, 3, 4]


def test_first_and_last_nodes_pin_the_order_and_exclusions_are_left_out() -> None:
    facts = cluster(*(worker(f"w{i}") for i in range(1, 7)), control_plane("cp"))
    rollout = spec(firstNodes=["w5", "w4"], lastNodes=["w1"], excludeNodes=["w3"], canarySize=1)
    assert layout(plan_waves(rollout, facts)) == [
        ("canary", ["w5"]),
        ("workers", ["w4"]),
        ("workers", ["w2"]),
        ("workers", ["w6"]),
        ("workers", ["w1"]),
        ("control-plane", ["cp"]),
    ]
    assert excluded_nodes(rollout, facts) == ["w3"]


def test_percentage_budget_counts_eligible_workers_rounded_down() -> None:
    facts = cluster(*(worker(f"w{i:02}") for i in range(10)), control_plane("cp"))
    assert wave_budget(spec(maxUnavailable="25%"), 10) == 2
    assert wave_budget(spec(maxUnavailable="5%"), 10) == 1  # never zero
    sizes = [len(wave.nodes) for wave in plan_waves(spec(maxUnavailable="25%"), facts)]
    assert sizes == [1, 2, 2, 2, 2, 1, 1]


def test_one_zone_at_a_time_sorts_by_zone_and_never_mixes_zones() -> None:
    facts = cluster(
        worker("a1", "zone-a"),
        worker("b1", "zone-b"),
        worker("a2", "zone-a"),
        worker("b2", "zone-b"),
        worker("a3", "zone-a"),
    )
    waves = plan_waves(spec(maxUnavailable=5, oneZoneAtATime=True), facts)
    assert [(wave.nodes, wave.zone) for wave in waves] == [
        (["a1"], "zone-a"),
        (["a2", "a3"], "zone-a"),
        (["b1", "b2"], "zone-b"),
    ]


def test_one_zone_canary_stays_in_the_first_zone() -> None:
    facts = cluster(worker("a1", "a"), worker("b1", "b"), worker("b2", "b"), worker("a2", "a"))
    rollout = spec(canarySize=2, maxUnavailable=2, oneZoneAtATime=True, firstNodes=["b2"])
    waves = plan_waves(rollout, facts)
    assert layout(waves)[0] == ("canary", ["b2", "b1"])


def test_canary_is_capped_by_the_budget() -> None:
    facts = cluster(*(worker(f"w{i}") for i in range(5)))
    assert len(plan_waves(spec(canarySize=4, maxUnavailable=2), facts)[0].nodes) == 2


def test_cluster_without_workers_gets_control_plane_waves_only() -> None:
    waves = plan_waves(spec(), cluster(control_plane("cp2"), control_plane("cp1")))
    assert layout(waves) == [("control-plane", ["cp1"]), ("control-plane", ["cp2"])]


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"firstNodes": ["wrker-1"]}, "rollout.firstNodes: no node named 'wrker-1'.*worker-1"),
        ({"lastNodes": ["ghost"]}, "rollout.lastNodes: no node named 'ghost'"),
        ({"excludeNodes": ["nope"]}, "rollout.excludeNodes: no node named 'nope'"),
        ({"firstNodes": ["cp"]}, "cp is a control-plane node"),
    ],
)
def test_plan_errors_name_the_problem(rollout: dict[str, Any], message: str) -> None:
    facts = cluster(worker("worker-1"), worker("worker-2"), control_plane("cp"))
    with pytest.raises(PlanError, match=message):
        plan_waves(spec(**rollout), facts)


# --- properties ---------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MigrationSpec, ClusterFacts]:
    count = draw(st.integers(min_value=1, max_value=30))
    zones = draw(
        st.lists(st.sampled_from(["z1", "z2", "z3", None]), min_size=count, max_size=count)
    )
    roles = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    nodes = [
        NodeFacts(name=f"node-{index:02}", zone=zone, control_plane=role and index % 3 == 0)
        for index, (zone, role) in enumerate(zip(zones, roles, strict=True))
    ]
    names = [node.name for node in nodes]
    workers = [node.name for node in nodes if not node.control_plane]
    picked = draw(st.permutations(names))
    exclude_count = draw(st.integers(min_value=0, max_value=max(0, len(names) // 4)))
    excluded = picked[:exclude_count]
    rest = list(picked[exclude_count:])
    first = draw(st.lists(st.sampled_from(workers), unique=True, max_size=3)) if workers else []
    first = [name for name in first if name not in excluded]
    last = [name for name in rest if name not in first][: draw(st.integers(0, 3))]
    budget = draw(st.integers(min_value=1, max_value=8) | st.sampled_from(["10%", "34%", "100%"]))
    rollout = {
        "canarySize": draw(st.integers(min_value=1, max_value=4)),
        "maxUnavailable": budget,
        "oneZoneAtATime": draw(st.booleans()),
        "firstNodes": first,
        "lastNodes": last,
        "excludeNodes": excluded,
    }
    return spec(**rollout), cluster(*nodes)


def budget_of(rollout_spec: MigrationSpec, facts: ClusterFacts) -> int:
    excluded = set(rollout_spec.rollout.exclude_nodes)
    workers = [n for n in facts.nodes if not n.control_plane and n.name not in excluded]
    return wave_budget(rollout_spec, len(workers))


@PROPERTIES
@given(scenarios())
def test_every_eligible_node_is_in_exactly_one_wave(scenario: tuple[Any, ClusterFacts]) -> None:
    rollout_spec, facts = scenario
    planned = [name for wave in plan_waves(rollout_spec, facts) for name in wave.nodes]
    eligible = [n.name for n in facts.nodes if n.name not in rollout_spec.rollout.exclude_nodes]
    assert sorted(planned) == sorted(eligible)
    assert len(planned) == len(set(planned))


@PROPERTIES
@given(scenarios())
def test_no_wave_exceeds_max_unavailable(scenario: tuple[Any, ClusterFacts]) -> None:
    rollout_spec, facts = scenario
    budget = budget_of(rollout_spec, facts)
    assert all(1 <= len(wave.nodes) <= budget for wave in plan_waves(rollout_spec, facts))


@PROPERTIES
@given(scenarios())
def test_control_planes_come_last_one_per_wave(scenario: tuple[Any, ClusterFacts]) -> None:
    rollout_spec, facts = scenario
    roles = {node.name: node.control_plane for node in facts.nodes}
    kinds = [wave.kind for wave in plan_waves(rollout_spec, facts)]
    for wave in plan_waves(rollout_spec, facts):
        is_cp = [roles[name] for name in wave.nodes]
        assert all(is_cp) if wave.kind == "control-plane" else not any(is_cp)
        if wave.kind == "control-plane":
            assert len(wave.nodes) == 1
    first_cp = kinds.index("control-plane") if "control-plane" in kinds else len(kinds)
    assert all(kind == "control-plane" for kind in kinds[first_cp:])


@PROPERTIES
@given(scenarios())
def test_canary_is_first_has_only_workers_and_starts_with_first_nodes(
    scenario: tuple[Any, ClusterFacts],
) -> None:
    rollout_spec, facts = scenario
    waves = plan_waves(rollout_spec, facts)
    kinds = [wave.kind for wave in waves]
    has_workers = any(
        not n.control_plane and n.name not in rollout_spec.rollout.exclude_nodes
        for n in facts.nodes
    )
    assert kinds.count("canary") == (1 if has_workers else 0)
    if has_workers:
        canary = waves[0]
        assert canary.kind == "canary"
        assert len(canary.nodes) <= rollout_spec.rollout.canary_size
        first = rollout_spec.rollout.first_nodes
        if first and not rollout_spec.rollout.one_zone_at_a_time:
            assert canary.nodes[0] == first[0]


@PROPERTIES
@given(scenarios())
def test_one_zone_rule_holds_when_enabled(scenario: tuple[Any, ClusterFacts]) -> None:
    rollout_spec, facts = scenario
    if not rollout_spec.rollout.one_zone_at_a_time:
        rollout_spec = rollout_spec.model_copy(
            update={"rollout": rollout_spec.rollout.model_copy(update={"one_zone_at_a_time": True})}
        )
    zone = {node.name: node.zone for node in facts.nodes}
    for wave in plan_waves(rollout_spec, facts):
        assert len({zone[name] for name in wave.nodes}) == 1
        assert wave.zone == zone[wave.nodes[0]]


@PROPERTIES
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_gives_the_same_plan_in_any_discovery_order(
    scenario: tuple[Any, ClusterFacts], shuffler: random.Random
) -> None:
    rollout_spec, facts = scenario
    shuffled = list(facts.nodes)
    shuffler.shuffle(shuffled)
    reordered = facts.model_copy(update={"nodes": shuffled})
    assert plan_waves(rollout_spec, facts) == plan_waves(rollout_spec, reordered)
    assert plan_waves(rollout_spec, facts) == plan_waves(rollout_spec, facts)


@PROPERTIES
@given(scenarios())
def test_last_nodes_close_the_worker_waves(scenario: tuple[Any, ClusterFacts]) -> None:
    rollout_spec, facts = scenario
    if rollout_spec.rollout.one_zone_at_a_time:
        return  # a one-zone canary may pull a node of its zone forward, past lastNodes
    roles = {node.name: node.control_plane for node in facts.nodes}
    order = [n for wave in plan_waves(rollout_spec, facts) for n in wave.nodes if not roles[n]]
    last = [name for name in rollout_spec.rollout.last_nodes if not roles[name]]
    assert order[len(order) - len(last) :] == last
