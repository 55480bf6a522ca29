"""Discovery's failures are typed: a cluster discovery cannot read fails the discover activity
at once, non-retryable, instead of being retried for minutes."""

from __future__ import annotations

import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.discovery import DiscoveryError, discover_cluster
from activities.kubeapi import Kube
from activities.registry import MigrationActivities
from plan.contract import StepError
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, node, pod


def cluster(net_conf: str | None) -> FakeKube:
    """A node and a flannel DaemonSet whose ConfigMap holds ``net_conf`` (None: no key)."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    kube.add("/apis/apps/v1/namespaces/kube-flannel/daemonsets", {
        "metadata": {"name": "kube-flannel-ds"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "kube-flannel", "image": "flannel/flannel:v0.26.0",
                            "command": ["/opt/bin/flanneld"]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "kube-flannel-cfg"}}]}}}})
    kube.add("/api/v1/namespaces/kube-flannel/configmaps", {
        "metadata": {"name": "kube-flannel-cfg"},
        "data": {} if net_conf is None else {"net-conf.json": net_conf}})
    return kube


class FakeContext(ActivityContext):
    """Hands every activity the one fake cluster."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__()
        self.fake = kube

    def kube(self, cluster: ClusterRef) -> Kube:
        return self.fake


def test_a_readable_flannel_config_is_discovered() -> None:
    facts = discover_cluster(cluster('{"Network": "10.244.0.0/16", "Backend": '
                                     '{"Type": "vxlan", "VNI": 4096}}'))
    assert facts.flannel is not None
    assert str(facts.flannel.network) == "10.244.0.0/16" and facts.flannel.vni == 4096
    assert facts.api_server_host == "10.0.0.1" and facts.api_server_port == 6443
    assert [(n.name, n.boot_id, n.ready, n.schedulable) for n in facts.nodes] == [
        ("node-1", "boot-1", True, True)]


def test_pods_a_drain_may_refuse_are_recorded_from_one_list_of_pods() -> None:
    kube = cluster('{"Network": "10.244.0.0/16"}')
    for each in [
        pod("web", "node-1"),  # a Deployment's: nothing to say
        pod("cache", "node-1", empty_dirs=("scratch",)),
        pod("debug", "node-2", owner=None, namespace="default"),
        pod("both", "node-2", owner=None, empty_dirs=("tmp",)),
        # What a drain leaves alone or has no say over: never recorded.
        pod("agent", "node-1", owner="DaemonSet", empty_dirs=("run",)),
        pod("static", "node-1", owner=None, annotations={"kubernetes.io/config.mirror": "x"}),
        pod("done", "node-1", owner=None, phase="Succeeded"),
        pod("going", "node-1", owner=None, terminating=True),
        pod("pending", "", owner=None),
    ]:
        kube.add(f"/api/v1/namespaces/{each['metadata']['namespace']}/pods", each)
    facts = discover_cluster(kube)
    assert [(str(p), p.node, p.empty_dirs, p.unmanaged) for p in facts.pods_drain_may_refuse
            ] == [("apps/cache", "node-1", ["scratch"], False),
                  ("default/debug", "node-2", [], True),
                  ("apps/both", "node-2", ["tmp"], True)]
    assert [path for path, _ in kube.asked("GET", "/pods")] == ["/api/v1/pods"]


@pytest.mark.parametrize(("net_conf", "words"), [
    ("not json", "kube-flannel/kube-flannel-cfg: net-conf.json is not usable"),
    ('{"Backend": {"Type": "vxlan"}}', "expected JSON with Network and Backend"),
    (None, "no ConfigMap with net-conf.json among ['kube-flannel-cfg']"),
])
def test_an_unreadable_flannel_config_fails_typed_and_non_retryable(
        net_conf: str | None, words: str) -> None:
    with pytest.raises(DiscoveryError) as raised:
        discover_cluster(cluster(net_conf))
    error = raised.value
    assert isinstance(error, ApplicationError)
    assert error.type == StepError.DISCOVERY_FAILED and error.non_retryable
    assert words in str(error)


def test_the_discover_activity_fails_with_it_and_the_workflow_sees_its_type() -> None:
    steps = MigrationActivities(FakeContext(cluster("not json")))
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(steps.discover_cluster, ClusterRef(name="c"))
    # What Temporal sends the workflow: the failure as the worker's converter encodes it.
    failure = Failure()
    converter = pydantic_data_converter  # the worker's
    converter.failure_converter.to_failure(raised.value, converter.payload_converter, failure)
    assert failure.application_failure_info.type == StepError.DISCOVERY_FAILED
    assert failure.application_failure_info.non_retryable
    seen = converter.failure_converter.from_failure(failure, converter.payload_converter)
    assert isinstance(seen, ApplicationError)
    assert (seen.type, seen.non_retryable) == (StepError.DISCOVERY_FAILED, True)
