"""The finalize steps without a cluster: which pods recycling evicts, which it only reports, and
its own typed failure when budgets hold pods back; the agents' rolling restart, which waits as
long as the rollout moves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.finalize import recycle_pods, rollout_restart
from activities.rollout import NOT_READY_YET
from plan.contract import RecycleInput, RecycleResult, RolloutRestartInput, StepError
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


# ---- the agents' rolling restart --------------------------------------------------------------

AGENTS = "/apis/apps/v1/namespaces/kube-system/daemonsets"


def agents(desired: int) -> FakeKube:
    kube = FakeKube()
    kube.add(AGENTS, {"metadata": {"name": "cilium", "namespace": "kube-system", "generation": 1},
                      "spec": {"template": {"metadata": {}}},
                      "status": {"observedGeneration": 1, "desiredNumberScheduled": desired,
                                 "updatedNumberScheduled": 0, "numberReady": desired,
                                 "numberAvailable": desired}})
    return kube


def restart(kube: FakeKube, stall_seconds: float = 600) -> None:
    ActivityEnvironment().run(rollout_restart, kube, RolloutRestartInput(
        cluster=ClusterRef(name="c"), namespace="kube-system", timeout_seconds=stall_seconds,
        restarted_at="2026-11-28T03:00:00Z"))


def rolling(per_wait: int) -> Callable[[FakeKube], None]:
    """The DaemonSet controller replacing ``per_wait`` agents while the step waits once."""
    def act(kube: FakeKube) -> None:
        status = kube.objects[("/apis/apps/v1", "daemonsets", "kube-system", "cilium")]["status"]
        status["updatedNumberScheduled"] = min(status["updatedNumberScheduled"] + per_wait,
                                               status["desiredNumberScheduled"])
    return act


def test_a_rollout_of_many_agents_a_few_at_a_time_is_waited_for_while_it_moves() -> None:
    # 1,000 agents two at a time: 500 rounds, each within the stall window, never all of it.
    kube = agents(1000)
    kube.while_waiting.append(rolling(per_wait=2))

    restart(kube)

    ds = kube.get(f"{AGENTS}/cilium")
    assert ds["status"]["updatedNumberScheduled"] == 1000
    assert ds["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-11-28T03:00:00Z"}
    assert kube.waits >= 500


def test_a_rollout_that_stands_still_for_the_stall_window_fails_to_be_retried() -> None:
    kube = agents(10)
    kube.while_waiting.append(rolling(per_wait=0))

    with pytest.raises(ApplicationError) as raised:
        restart(kube, stall_seconds=900)

    assert raised.value.type == NOT_READY_YET
    assert "made no progress for 900s: 10/10 ready, 0 up to date" in str(raised.value)
