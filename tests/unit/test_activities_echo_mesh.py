"""The echo mesh's deploy and removal against a fake cluster: what is created, with whose
labels, how a retry converges, and that a namespace someone else owns is never used or deleted."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.echo_mesh import deploy_echo_mesh, remove_echo_mesh
from plan.contract import (
    OWNER_CLUSTER_LABEL,
    OWNER_MIGRATION_ANNOTATION,
    EchoMeshInput,
    EchoMeshRemoval,
    EchoMeshStatus,
    StepError,
)
from plan.policies import ClusterRef, ConnectivityPolicy
from tests.fake_kube import DELETION_STAMP, FakeKube

NAMESPACE = "cilium-migrate-echo"
DAEMONSET = f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/cilium-migrate-echo"
POLICY = ConnectivityPolicy(namespace=NAMESPACE, image="registry.k8s.io/e2e-test-images/"
                            "agnhost:2.59", max_failed_requests=0, window_seconds=60,
                            interval_seconds=5, sample_pairs=16)


def deploy(exclude: list[str] | None = None, timeout: float = 60) -> EchoMeshInput:
    return EchoMeshInput(cluster=ClusterRef(name="prod"), migration_id="cilium-migrate/prod",
                         policy=POLICY, exclude_nodes=exclude or [], timeout_seconds=timeout)


def removal(timeout: float = 60) -> EchoMeshRemoval:
    return EchoMeshRemoval(cluster=ClusterRef(name="prod"), migration_id="cilium-migrate/prod",
                           namespace=NAMESPACE, timeout_seconds=timeout)


@pytest.fixture
def kube() -> FakeKube:
    """A cluster whose time passes only while a step waits."""
    return FakeKube()


def daemonset_controller(desired: int, ready_after: int) -> Any:
    """Schedules ``desired`` pods and reports them up to date, Ready and available once time
    passed ``ready_after`` times."""
    passed = [0]

    def act(kube: FakeKube) -> None:
        passed[0] += 1
        ready = desired if passed[0] >= ready_after else 0
        for key, obj in kube.objects.items():
            if key[1] == "daemonsets":
                obj["status"] = {"observedGeneration": obj["metadata"].get("generation", 1),
                                 "desiredNumberScheduled": desired,
                                 "updatedNumberScheduled": desired,
                                 "numberReady": ready, "numberAvailable": ready}
    return act


def test_the_mesh_is_created_with_the_runs_labels_and_waits_for_its_pods(kube: FakeKube) -> None:
    kube.while_waiting.append(daemonset_controller(desired=4, ready_after=1))
    status: EchoMeshStatus = ActivityEnvironment().run(
        deploy_echo_mesh, kube, deploy(exclude=["gpu-2", "gpu-1"]))
    assert (status.namespace, status.desired, status.ready) == (NAMESPACE, 4, 4)
    namespace = kube.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]
    assert namespace["labels"] == {"app.kubernetes.io/managed-by": "cilium-migrate",
                                   OWNER_CLUSTER_LABEL: "prod"}
    assert namespace["annotations"] == {OWNER_MIGRATION_ANNOTATION: "cilium-migrate/prod"}
    daemonset = kube.get(DAEMONSET)
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]  # cordoned and tainted nodes too
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert term == {"matchFields": [{"key": "metadata.name", "operator": "NotIn",
                                     "values": ["gpu-1", "gpu-2"]}]}
    [container] = pod["containers"]
    assert container["image"] == POLICY.image
    assert container["args"] == ["netexec", "--http-port=8080", "--udp-port=-1"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    # netexec answers /shell to anyone: the pod holds nothing worth reaching.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_mesh_not_ready_in_time_is_reported_as_it_is(kube: FakeKube) -> None:
    kube.while_waiting.append(daemonset_controller(desired=3, ready_after=10_000))
    status: EchoMeshStatus = ActivityEnvironment().run(deploy_echo_mesh, kube,
                                                       deploy(timeout=10))
    assert (status.desired, status.ready) == (3, 0)


def test_a_retry_updates_the_daemonset_and_drops_exclusions_no_longer_wanted(
        kube: FakeKube) -> None:
    kube.while_waiting.append(daemonset_controller(desired=2, ready_after=1))
    ActivityEnvironment().run(deploy_echo_mesh, kube, deploy(exclude=["gpu-1"]))
    ActivityEnvironment().run(deploy_echo_mesh, kube, deploy())
    assert kube.get(DAEMONSET)["spec"]["template"]["spec"].get("affinity") is None
    assert [path for path, _ in kube.asked("PATCH")] == [DAEMONSET]


def test_a_namespace_of_that_name_owned_by_someone_else_is_refused(kube: FakeKube) -> None:
    kube.add("/api/v1/namespaces", {"metadata": {"name": NAMESPACE, "labels": {"team": "web"}}})
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(deploy_echo_mesh, kube, deploy())
    assert raised.value.type == StepError.NAMESPACE_NOT_OURS and raised.value.non_retryable
    assert "set connectivity.namespace" in str(raised.value)
    assert not kube.asked("POST") and not kube.asked("PATCH")
    # Nor is it removed at the end.
    with pytest.raises(ApplicationError):
        ActivityEnvironment().run(remove_echo_mesh, kube, removal())
    assert not kube.asked("DELETE")


def test_another_clusters_mesh_is_not_this_ones(kube: FakeKube) -> None:
    kube.add("/api/v1/namespaces", {"metadata": {"name": NAMESPACE, "labels": {
        "app.kubernetes.io/managed-by": "cilium-migrate", OWNER_CLUSTER_LABEL: "staging"}}})
    with pytest.raises(ApplicationError):
        ActivityEnvironment().run(deploy_echo_mesh, kube, deploy())


def test_a_mesh_namespace_still_terminating_is_waited_out_before_the_new_one(
        kube: FakeKube) -> None:
    kube.while_waiting.append(daemonset_controller(desired=1, ready_after=1))
    kube.add("/api/v1/namespaces", {"metadata": {
        "name": NAMESPACE, "deletionTimestamp": DELETION_STAMP, "labels": {
            "app.kubernetes.io/managed-by": "cilium-migrate", OWNER_CLUSTER_LABEL: "prod"}}})
    status: EchoMeshStatus = ActivityEnvironment().run(deploy_echo_mesh, kube, deploy())
    assert status.ready == 1
    assert "deletionTimestamp" not in kube.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]


def test_removal_deletes_the_namespace_and_is_done_when_it_is_gone(kube: FakeKube) -> None:
    kube.while_waiting.append(daemonset_controller(desired=1, ready_after=1))
    ActivityEnvironment().run(deploy_echo_mesh, kube, deploy())
    assert ActivityEnvironment().run(remove_echo_mesh, kube, removal()) is True
    assert kube.get_or_none(f"/api/v1/namespaces/{NAMESPACE}") is None
    # Again (a retry, or an abort after finalize removed it): nothing to do, and nothing done.
    deletes = len(kube.asked("DELETE"))
    assert ActivityEnvironment().run(remove_echo_mesh, kube, removal()) is True
    assert len(kube.asked("DELETE")) == deletes


def test_removal_reports_a_namespace_still_terminating_when_time_is_up(kube: FakeKube) -> None:
    kube.add("/api/v1/namespaces", {"metadata": {
        "name": NAMESPACE, "deletionTimestamp": DELETION_STAMP, "labels": {
            "app.kubernetes.io/managed-by": "cilium-migrate", OWNER_CLUSTER_LABEL: "prod"}}})
    kube.kept_terminating.add(f"/{NAMESPACE}")  # a finalizer holds it
    assert ActivityEnvironment().run(remove_echo_mesh, kube, removal(timeout=10)) is False
    assert not kube.asked("DELETE")  # already being deleted: not asked again
