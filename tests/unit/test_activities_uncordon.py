"""Uncordon: one conditional JSON patch for a node this run cordoned (no read), and the
read-and-decide path for everything else: a node cordoned by someone else, one already
uncordoned, or one whose cordon someone else lifted while our annotation stayed."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.nodes import cordon_node, uncordon_node
from plan.contract import CORDONED_BY_ANNOTATION, ClusterRef, NodeRef, StepError
from tests.fake_kube import FakeKube, node

NODES = "/api/v1/nodes"
OURS = NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="run-1")


def cordoned(by: str | None = "run-1", unschedulable: bool = True) -> FakeKube:
    kube = FakeKube()
    obj = node("node-1")
    obj["spec"] = {"unschedulable": True} if unschedulable else {}
    if by is not None:
        obj["metadata"]["annotations"] = {CORDONED_BY_ANNOTATION: by, "kept": "yes"}
    kube.add(NODES, obj)
    return kube


def the_node(kube: FakeKube) -> dict:  # type: ignore[type-arg]
    return kube.objects[("/api/v1", "nodes", "", "node-1")]


def test_a_node_we_cordoned_is_uncordoned_with_one_write_and_no_read() -> None:
    kube = cordoned()
    assert uncordon_node(kube, OURS) is True
    assert [m for m, _, _ in kube.requests] == ["PATCH", "POST"]  # the patch, its event
    after = the_node(kube)
    assert not after["spec"].get("unschedulable")
    assert after["metadata"]["annotations"] == {"kept": "yes"}
    assert [reason for reason, _ in kube.events()] == ["CiliumMigrateUncordoned"]


def test_a_cordon_and_uncordon_round_trip() -> None:
    kube = FakeKube()
    kube.add(NODES, node("node-1"))
    assert cordon_node(kube, OURS).cordoned_by_us
    assert uncordon_node(kube, OURS) is True
    assert not the_node(kube)["spec"].get("unschedulable")
    assert uncordon_node(kube, OURS) is False  # again: nothing of ours left


@pytest.mark.parametrize("by", ["someone-else", None])
def test_a_cordon_not_ours_stays(by: str | None) -> None:
    kube = cordoned(by=by)
    assert uncordon_node(kube, OURS) is False
    assert the_node(kube)["spec"]["unschedulable"] is True
    assert kube.events() == []


def test_our_annotation_left_on_a_node_someone_uncordoned_is_removed() -> None:
    kube = cordoned(unschedulable=False)
    assert uncordon_node(kube, OURS) is True  # the decision read the node: still ours
    assert CORDONED_BY_ANNOTATION not in the_node(kube)["metadata"]["annotations"]
    assert [reason for reason, _ in kube.events()] == ["CiliumMigrateUncordoned"]


def test_a_missing_node_is_gone() -> None:
    with pytest.raises(ApplicationError) as raised:
        uncordon_node(FakeKube(), OURS)
    assert raised.value.type == StepError.NODE_GONE
