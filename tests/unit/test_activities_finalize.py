"""Recycling pods left on flannel, without a cluster: which pods it evicts, which it only
reports, and its own typed failure when budgets hold pods back."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.finalize import recycle_pods
from plan.contract import RecycleInput, RecycleResult, StepError
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, api_error, pod

CILIUM_POOL = "10.245.0.0/16"


def cluster() -> FakeKube:
    kube = FakeKube()
    for each in [pod("old", ip="10.244.1.5"), pod("new", ip="10.245.1.5"),
                 pod("stray", ip="10.244.1.6", owner=None),
                 pod("host", ip="192.168.0.5", host_network=True),
                 pod("done", ip="10.244.1.7", phase="Succeeded")]:
        kube.add("/api/v1/namespaces/apps/pods", each)
    kube.add("/api/v1/namespaces/other/pods", pod("elsewhere", namespace="other",
                                                  ip="10.244.2.5"))
    return kube


def recycle(kube: FakeKube, timeout: float = 60) -> RecycleResult:
    return ActivityEnvironment().run(recycle_pods, kube, RecycleInput(
        cluster=ClusterRef(name="c"), cilium_pools=[CILIUM_POOL], timeout_seconds=timeout,
        namespaces=["apps"]))


def test_owned_pods_outside_the_pools_are_evicted_unowned_ones_only_reported() -> None:
    kube = cluster()
    result = recycle(kube)
    assert result.recycled == ["apps/old"] and result.unmanaged == ["apps/stray"]
    assert [path for path, _ in kube.asked("POST", "/eviction")] == [
        "/api/v1/namespaces/apps/pods/old/eviction"]
    assert "apps/old" not in kube.pods() and "other/elsewhere" in kube.pods()


def test_pods_a_budget_holds_back_fail_the_step_as_recycle_blocked() -> None:
    kube = cluster()
    kube.eviction_errors["apps/old"] = api_error(429, "Cannot evict pod")
    with pytest.raises(ApplicationError) as raised:
        recycle(kube, timeout=0)
    error = raised.value
    assert error.type == StepError.RECYCLE_BLOCKED and error.non_retryable
    assert [b["pod"] for b in error.details[0]] == ["apps/old"]
    assert "pod apps/old: Cannot evict pod" in error.message
