"""The label step without a cluster: one patch, whatever the node holds, and no event."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.nodes import label_node
from plan.contract import LabelInput, NodeRef, StepError
from plan.facts import MIGRATION_LABEL
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, node

TARGET = NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="m")
NODE = ("/api/v1", "nodes", "", "node-1")


def test_the_label_is_set_and_removed_with_one_patch_each_time() -> None:
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    for _ in range(2):  # a retry finds it done, and changes nothing
        label_node(kube, LabelInput(target=TARGET))
        assert kube.objects[NODE]["metadata"]["labels"][MIGRATION_LABEL] == "true"
    for _ in range(2):
        label_node(kube, LabelInput(target=TARGET, value=None))
        assert MIGRATION_LABEL not in kube.objects[NODE]["metadata"]["labels"]
    assert [method for method, _, _ in kube.requests] == ["PATCH"] * 4
    assert kube.events() == []


def test_labelling_a_node_that_is_gone_says_so() -> None:
    with pytest.raises(ApplicationError) as raised:
        label_node(FakeKube(), LabelInput(target=TARGET))
    assert raised.value.type == StepError.NODE_GONE and raised.value.non_retryable
