"""One eviction: what each answer of the Eviction API means for the pod, and the budget named
when one is in the way."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from activities.eviction import evict, none_of
from activities.kubeapi import Obj
from tests.fake_kube import FakeKube, api_error, pod

PDBS = "/apis/policy/v1/namespaces/apps/poddisruptionbudgets"


def cluster(db: Obj) -> FakeKube:
    kube = FakeKube()
    kube.add("/api/v1/namespaces/apps/pods", db)
    return kube


def budget(name: str, selector: Obj | None, allowed: int, desired: int = 2,
           current: int = 1) -> Obj:
    return {"metadata": {"name": name}, "spec": {"selector": selector},
            "status": {"disruptionsAllowed": allowed, "desiredHealthy": desired,
                       "currentHealthy": current}}


DB = pod("db", labels={"app": "db", "tier": "data"})


def test_an_accepted_eviction_carries_the_grace_period_and_the_pod_goes() -> None:
    kube = cluster(DB)
    assert evict(kube, DB, 7) is None
    [(path, body)] = kube.asked("POST")
    assert path == "/api/v1/namespaces/apps/pods/db/eviction"
    assert body["metadata"] == {"name": "db", "namespace": "apps"}
    assert body["deleteOptions"] == {"gracePeriodSeconds": 7}
    kube.pass_time()
    assert kube.pods() == []


def test_without_a_grace_period_the_pod_keeps_its_own() -> None:
    kube = cluster(DB)
    assert evict(kube, DB, None) is None
    [(_, body)] = kube.asked("POST")
    assert "deleteOptions" not in body


def test_a_pod_already_gone_counts_as_evicted() -> None:
    kube = FakeKube()  # 404: no such pod
    assert evict(kube, DB, None) is None


def test_a_refusal_names_the_budget_that_allows_no_disruption() -> None:
    kube = cluster(DB)
    kube.add(PDBS, budget("web-pdb", {"matchLabels": {"app": "web"}}, allowed=0))
    kube.add(PDBS, budget("spare-pdb", {"matchLabels": {"app": "db"}}, allowed=1))
    kube.add(PDBS, budget("db-pdb", {"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["data"]}]}, allowed=0, desired=3,
        current=2))
    kube.eviction_errors["apps/db"] = api_error(429, "Cannot evict pod")
    blocker = evict(kube, DB, None)
    assert blocker is not None
    assert (blocker.pod, blocker.pdb) == ("apps/db", "apps/db-pdb")
    assert blocker.reason == ("PodDisruptionBudget apps/db-pdb allows no disruption: "
                              "needs 3 healthy, has 2")
    assert kube.pods() == ["apps/db"]


def test_a_refusal_without_a_budget_to_name_gives_the_servers_words() -> None:
    kube = cluster(DB)
    kube.add(PDBS, budget("spare-pdb", {"matchLabels": {"app": "db"}}, allowed=1))
    error = ApiException(status=429, reason="Too Many Requests")
    error.body = json.dumps({"message": "Cannot evict pod as it would violate the budget.",
                             "details": {"causes": [{"message": "needs 2 healthy"}]}})
    kube.eviction_errors["apps/db"] = error
    blocker = evict(kube, DB, None)
    assert blocker is not None and blocker.pdb is None
    assert blocker.reason == "Cannot evict pod as it would violate the budget.; needs 2 healthy"


def test_a_refusal_with_an_unreadable_body_says_the_status() -> None:
    kube = cluster(DB)
    error = ApiException(status=429, reason="Too Many Requests")
    error.body = "<html>busy</html>"
    kube.eviction_errors["apps/db"] = error
    blocker = evict(kube, DB, None)
    assert blocker is not None and blocker.reason == "eviction refused (HTTP 429)"


def test_a_namespace_being_deleted_refuses_evictions() -> None:
    kube = cluster(DB)
    kube.eviction_errors["apps/db"] = api_error(403, "namespace apps is terminating",
                                                "NamespaceTerminating")
    blocker = evict(kube, DB, None)
    assert blocker is not None and blocker.reason == "its namespace is being deleted"


def test_a_pod_under_two_budgets_is_refused_with_the_servers_words() -> None:
    kube = cluster(DB)
    kube.eviction_errors["apps/db"] = api_error(
        500, "This pod has more than one PodDisruptionBudget, which the eviction subresource "
             "does not support.")
    blocker = evict(kube, DB, None)
    assert blocker is not None and blocker.pod == "apps/db"
    assert "more than one PodDisruptionBudget" in blocker.reason


@pytest.mark.parametrize("error", [
    api_error(403, "forbidden: cannot create pods/eviction", "Forbidden"),
    api_error(500, "etcd leader changed"),
    api_error(409, "conflict"),
])
def test_other_errors_are_raised(error: ApiException) -> None:
    kube = cluster(DB)
    kube.eviction_errors["apps/db"] = error
    with pytest.raises(ApiException) as raised:
        evict(kube, DB, None)
    assert raised.value is error


def test_none_of_tells_by_uid_not_by_name() -> None:
    gone = none_of({"uid-old"})
    replacement = pod("db")
    replacement["metadata"]["uid"] = "uid-new"
    old = pod("db")
    old["metadata"]["uid"] = "uid-old"
    assert gone([replacement])
    assert not gone([replacement, old])
    assert gone([])
