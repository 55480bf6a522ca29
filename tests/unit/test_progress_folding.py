"""A large migration's parent folds each migrated node's record to its wave and state, so the
state it carries into its next run and its final result stay far below Temporal's 2 MB payload
limit at 5,000 nodes with cloud-style node names; folded records survive the round trip. A wave
workflow's input and result stay as small, however large the wave."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio.contrib.pydantic import pydantic_data_converter

from plan.contract import NodeStep
from plan.facts import ClusterFacts
from plan.planner import MigrationPlan, make_plan
from plan.policies import cluster_ref, node_policies
from tests.fakes import LARGE_CILIUM_POOL, FakeCluster, passed_checks
from tests.workflows.support import spec
from workflows.continuation import Continuation
from workflows.gates import GateBook
from workflows.messages import MigrationInput, WaveMigrationInput
from workflows.progress import (
    FOLD_MIGRATED_ABOVE,
    NodeProgress,
    NodeState,
    Progress,
    WaveProgress,
    WaveResult,
)
from workflows.progress_summary import summarize

NODES = 5_000
WAVE = 50
PAYLOAD_BUDGET = 1024 * 1024  # half of Temporal's 2 MB limit per payload
CARRIED_BUDGET = 512 * 1024  # the server warns of a payload larger than this
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def cloud_name(index: int) -> str:
    return f"ip-10-20-{index // 250}-{index % 250}.eu-west-1.compute.internal"


def finished(name: str, wave: int) -> NodeProgress:
    """A migrated node's record as its node workflow returns it."""
    return NodeProgress(
        name=name, wave=wave, state=NodeState.MIGRATED, step=NodeStep.DONE,
        started_at=START, finished_at=START + timedelta(seconds=95.5),
        boot_id_before=str(uuid.uuid4()), boot_id_after=str(uuid.uuid4()),
        cordoned_by_us=True, verify=passed_checks(name))


def large_plan() -> tuple[MigrationPlan, MigrationInput, ClusterFacts]:
    """A 5,000-node plan on cloud-style node names, the input of a run it continues, and the
    facts it was made from."""
    facts = FakeCluster(workers=NODES - 1).facts()
    facts = facts.model_copy(update={"nodes": [n.model_copy(update={"name": cloud_name(i)})
                                               for i, n in enumerate(facts.nodes)]})
    migration = spec("prod-eu", approvals={"policy": "none"},
                     rollout={"maxUnavailable": WAVE},
                     network={"podCIDRs": [LARGE_CILIUM_POOL]})
    plan = make_plan(migration, facts)
    assert plan.can_run, plan.findings
    return plan, MigrationInput(spec=migration), facts


def migrated_cluster(plan: MigrationPlan, fold: bool) -> Progress:
    progress = Progress(cluster=plan.cluster, started_at=START)
    for wave in plan.waves:
        progress.waves.append(WaveProgress(index=wave.index, kind=wave.kind, nodes=wave.nodes,
                                           state="done"))
        for name in wave.nodes:
            record = finished(name, wave.index)
            progress.nodes[name] = record.folded_record() if fold else record
    return progress


def payload_size(value: object) -> int:
    return len(pydantic_data_converter.payload_converter.to_payloads([value])[0].data)


def test_whole_records_of_five_thousand_nodes_would_not_fit_one_payload() -> None:
    # Why folding exists: the same cluster unfolded is over Temporal's 2 MB limit.
    plan, _, _ = large_plan()
    assert payload_size(migrated_cluster(plan, fold=False)) > 2 * 1024 * 1024


def test_a_folded_result_and_carried_state_fit_well_within_the_payload_limit() -> None:
    plan, first, facts = large_plan()
    progress = migrated_cluster(plan, fold=True)
    carried = first.model_copy(update={"continued": Continuation(
        plan=plan, next_wave=len(plan.waves), policies=node_policies(first.spec, facts),
        flannel=facts.flannel, progress=progress, gates=GateBook())})

    assert len(progress.nodes) == NODES
    assert payload_size(progress) < PAYLOAD_BUDGET, payload_size(progress)
    # The carried state repeats no node name the plan holds: under the server's warning.
    assert payload_size(carried) < CARRIED_BUDGET, payload_size(carried)


def test_the_carried_state_comes_back_whole_in_the_next_run() -> None:
    """Half-way: waves done and folded, a wave with a blocked, a failed and a skipped node,
    waves not started, a catch-up node migrated again outside the plan's waves."""
    plan, first, facts = large_plan()
    progress = migrated_cluster(plan, fold=True)
    middle = plan.waves[len(plan.waves) // 2]
    later = [wave for wave in plan.waves if wave.index > middle.index]
    for wave in later:
        progress.waves[wave.index - 1].state = "pending"
        for name in wave.nodes:
            progress.nodes[name] = NodeProgress(name=name, wave=wave.index)
    blocked, failed, skipped = middle.nodes[:3]
    progress.nodes[blocked] = NodeProgress(name=blocked, wave=middle.index,
                                           state=NodeState.BLOCKED, step=NodeStep.DRAIN,
                                           blocker="drain: shop/db-pdb allows no disruption")
    progress.nodes[failed] = finished(failed, middle.index).model_copy(
        update={"state": NodeState.FAILED, "error": "reboot timed out"})
    progress.nodes[skipped] = NodeProgress(name=skipped, wave=middle.index,
                                           state=NodeState.SKIPPED)
    catch_up = plan.waves[0].nodes[0]
    progress.nodes[catch_up] = finished(catch_up, 0)
    progress.halted = "node " + failed + " failed"
    carried = first.model_copy(update={"continued": Continuation(
        plan=plan, next_wave=later[0].index - 1, policies=node_policies(first.spec, facts),
        flannel=facts.flannel, progress=progress, gates=GateBook(pending=["wave-9"]))})
    converter = pydantic_data_converter.payload_converter

    back = converter.from_payloads(converter.to_payloads([carried]), [MigrationInput])[0]

    assert back == carried
    assert list(back.continued.progress.nodes) == list(progress.nodes)  # the plan's order
    assert back.continued.progress.nodes[blocked].blocker == progress.nodes[blocked].blocker


def test_records_out_of_the_plans_order_are_carried_as_they_are() -> None:
    plan, first, facts = large_plan()
    progress = migrated_cluster(plan, fold=True)
    progress.nodes = dict(reversed(progress.nodes.items()))
    carried = Continuation(plan=plan, next_wave=1, policies=node_policies(first.spec, facts),
                           flannel=facts.flannel, progress=progress, gates=GateBook())

    back = Continuation.model_validate_json(carried.model_dump_json())

    assert back == carried and list(back.progress.nodes) == list(progress.nodes)


def test_folded_records_come_back_folded_from_the_result_and_the_carried_state() -> None:
    progress = Progress(cluster="c")
    progress.nodes["a"] = finished("a", 1).folded_record()
    progress.nodes["b"] = NodeProgress(name="b", wave=1, state=NodeState.BLOCKED,
                                       step=NodeStep.DRAIN, blocker="drain: a PDB")
    converter = pydantic_data_converter.payload_converter

    back = converter.from_payloads(converter.to_payloads([progress]), [Progress])[0]

    assert back == progress
    assert back.nodes["a"] == NodeProgress(name="a", wave=1, state=NodeState.MIGRATED,
                                           folded=True)
    assert not back.nodes["b"].folded and back.nodes["b"].blocker == "drain: a PDB"
    assert summarize(back).counts == {"migrated": 1, "blocked": 1}
    assert Progress.model_validate(progress.model_dump(mode="json", exclude_defaults=True)) \
        == progress


def test_a_wave_of_every_node_fits_its_input_and_folded_result_in_a_payload() -> None:
    """maxUnavailable as large as the cluster: one wave of 5,000 nodes. Unfolded records come
    back only from migrations of at most FOLD_MIGRATED_ABOVE nodes."""
    plan, first, facts = large_plan()
    names = [name for wave in plan.waves for name in wave.nodes]
    wave = WaveMigrationInput(cluster=cluster_ref(first.spec.cluster), wave=1, nodes=names,
                              migration_id="cilium-migrate/prod-eu",
                              policies=node_policies(first.spec, facts), fold_migrated=True)
    folded = WaveResult(nodes=[finished(n, 1).kept(fold_migrated=True) for n in names])
    whole = WaveResult(nodes=[finished(n, 1) for n in names[:FOLD_MIGRATED_ABOVE]])

    assert payload_size(wave) < PAYLOAD_BUDGET, payload_size(wave)
    assert payload_size(folded) < PAYLOAD_BUDGET, payload_size(folded)
    assert payload_size(whole) < PAYLOAD_BUDGET, payload_size(whole)
    converter = pydantic_data_converter.payload_converter
    for result in (folded, whole):
        assert converter.from_payloads(converter.to_payloads([result]), [WaveResult])[0] == (
            result)
