"""The drain without a cluster: which pods it evicts, leaves, waits for or refuses, and how it
ends when pods do not leave."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.drain import MIRROR_ANNOTATION, drain_node, sort_pods
from activities.kubeapi import Obj
from plan.contract import DrainInput, DrainResult, NodeRef, StepError
from plan.policies import ClusterRef, DrainPolicy
from tests.fake_kube import FakeKube, api_error, node, pod

PODS = "/api/v1/namespaces/apps/pods"
TARGET = NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="m")


def policy(**changes: object) -> DrainPolicy:
    return DrainPolicy.model_validate({"timeout_seconds": 60, **changes})


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def cluster(*pods: Obj) -> FakeKube:
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    for each in pods:
        kube.add(PODS, each)
    return kube


def drain(kube: FakeKube, **changes: object) -> DrainResult:
    return ActivityEnvironment().run(drain_node, kube,
                                     DrainInput(target=TARGET, policy=policy(**changes)))


def blocked(kube: FakeKube, **changes: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        drain(kube, **changes)
    assert raised.value.type == StepError.DRAIN_BLOCKED and raised.value.non_retryable
    return raised.value


# ---- which pods: sort_pods ----------------------------------------------------------------

def test_controller_owned_pods_are_evicted_daemonset_and_mirror_pods_left() -> None:
    pods = [pod("web"), pod("agent", owner="DaemonSet"), pod("job", owner="Job"),
            pod("static", owner="Node", annotations={MIRROR_ANNOTATION: "x"})]
    sorted_ = sort_pods(pods, policy())
    assert names(sorted_.to_evict) == ["web", "job"]
    assert sorted_.skipped == ["apps/agent", "apps/static"]
    assert sorted_.terminating == [] and sorted_.refused == []


def test_finished_pods_are_ignored_and_terminating_ones_waited_for() -> None:
    pods = [pod("done", phase="Succeeded"), pod("crashed", phase="Failed", owner=None),
            pod("going", terminating=True), pod("web")]
    sorted_ = sort_pods(pods, policy(evict_unmanaged=False))
    assert names(sorted_.to_evict) == ["web"]
    assert names(sorted_.terminating) == ["going"]
    assert sorted_.skipped == [] and sorted_.refused == []  # the unmanaged one had finished


def test_emptydir_pods_are_refused_only_when_their_data_must_be_kept() -> None:
    cache = pod("cache", empty_dirs=("scratch", "tmp"))
    kept = sort_pods([cache], policy(delete_empty_dir_data=False))
    [refusal] = kept.refused
    assert refusal.pod == "apps/cache" and refusal.pdb is None
    assert "emptyDir volume(s) scratch, tmp" in refusal.reason
    assert kept.to_evict == []
    assert names(sort_pods([cache], policy(delete_empty_dir_data=True)).to_evict) == ["cache"]


def test_unmanaged_pods_are_refused_only_when_evicting_them_is_not_allowed() -> None:
    stray = pod("stray", owner=None)
    [refusal] = sort_pods([stray], policy(evict_unmanaged=False)).refused
    assert refusal.pod == "apps/stray" and "not managed by a controller" in refusal.reason
    assert names(sort_pods([stray], policy(evict_unmanaged=True)).to_evict) == ["stray"]


def test_a_daemonset_pod_is_left_even_when_it_would_otherwise_be_refused() -> None:
    agent = pod("agent", namespace="kube-system", owner="DaemonSet", empty_dirs=("run",))
    sorted_ = sort_pods([agent], policy(delete_empty_dir_data=False))
    assert sorted_.skipped == ["kube-system/agent"] and sorted_.refused == []


# ---- the step ------------------------------------------------------------------------------

def test_drain_evicts_with_the_grace_period_listing_the_node_once() -> None:
    kube = cluster(pod("web"), pod("db"), pod("agent", owner="DaemonSet"),
                   pod("elsewhere", node_name="node-2"))
    result = drain(kube, grace_period_seconds=5)
    assert sorted(result.evicted) == ["apps/db", "apps/web"]
    assert result.skipped == ["apps/agent"] and result.forced == []
    assert kube.pods() == ["apps/agent", "apps/elsewhere"]
    evictions = kube.asked("POST", "/eviction")
    assert len(evictions) == 2
    assert all(body["deleteOptions"] == {"gracePeriodSeconds": 5} for _, body in evictions)
    # One list of the node's pods; the wait for the evicted ones follows it on a watch.
    assert kube.asked("GET", "/api/v1/pods") == [("/api/v1/pods", None)]
    assert kube.waits == 1
    assert kube.asked("GET", "/nodes/node-1") == []  # pods are there: the node is too
    assert kube.events() == []  # a drain that went through is in the node's progress


def test_drain_of_a_node_that_is_gone_says_so() -> None:
    kube = FakeKube()  # no node-1, and so no pods on it either
    with pytest.raises(ApplicationError) as raised:
        drain(kube)
    assert raised.value.type == StepError.NODE_GONE


def test_drain_waits_for_terminating_pods_without_evicting_them_again() -> None:
    kube = cluster(pod("going", terminating=True))
    result = drain(kube)
    assert result.evicted == [] and kube.pods() == []
    assert kube.waits == 1 and kube.asked("POST", "/eviction") == []


def test_drain_stops_at_once_on_a_pod_it_must_not_evict() -> None:
    kube = cluster(pod("web"), pod("cache", empty_dirs=("scratch",)))
    error = blocked(kube, delete_empty_dir_data=False)
    assert "cannot be evicted as asked" in error.message and "apps/cache" in error.message
    assert [b["pod"] for b in error.details[0]] == ["apps/cache"]
    assert kube.asked("POST", "/eviction") == []
    assert kube.events()[-1][0] == "CiliumMigrateDrainBlocked"


def test_drain_names_the_budget_in_its_way_at_the_deadline() -> None:
    kube = cluster(pod("db", labels={"app": "db"}))
    kube.add("/apis/policy/v1/namespaces/apps/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"}, "spec": {"selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": 0, "desiredHealthy": 1, "currentHealthy": 1}})
    kube.eviction_errors["apps/db"] = api_error(429, "would violate the budget")
    error = blocked(kube, timeout_seconds=0)
    [blocker] = error.details[0]
    assert (blocker["pod"], blocker["pdb"]) == ("apps/db", "apps/db-pdb")
    assert "needs 1 healthy, has 1" in error.message
    assert kube.pods() == ["apps/db"]


def test_drain_reports_a_pod_that_stays_terminating() -> None:
    kube = cluster(pod("slow", terminating=True))
    kube.kept_terminating.add("apps/slow")
    error = blocked(kube, timeout_seconds=0)
    assert error.details[0] == [{"pod": "apps/slow", "pdb": None,
                                 "reason": "evicted but still terminating (grace period 30s)"}]


def test_drain_deletes_what_a_budget_protects_only_when_told_to() -> None:
    kube = cluster(pod("db"))
    kube.eviction_errors["apps/db"] = api_error(429, "would violate the budget")
    result = drain(kube, timeout_seconds=0, force_on_timeout=True, grace_period_seconds=3)
    assert result.forced == ["apps/db"] and result.evicted == []
    assert kube.asked("DELETE", "/pods/db") == [(f"{PODS}/db", {"gracePeriodSeconds": 3})]
    assert kube.pods() == []
    [(reason, message)] = kube.events()
    assert reason == "CiliumMigrateDrainForced" and "1 deleted after the timeout" in message
