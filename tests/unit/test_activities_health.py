"""The health check between waves, against a fake cluster whose DaemonSet controller and
kubelets catch up while the check waits (the fake lets time pass only inside a wait)."""

from __future__ import annotations

from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.health import check_health
from activities.kubeapi import Obj
from plan.contract import HealthInput, HealthReport
from plan.facts import MIGRATION_LABEL
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, node, pod
from workflows.steps import SHORT

FLANNEL_SETS = "/apis/apps/v1/namespaces/kube-flannel/daemonsets"
CILIUM_SETS = "/apis/apps/v1/namespaces/kube-system/daemonsets"
REQUEST = HealthInput(cluster=ClusterRef(name="c"), cilium_namespace="kube-system",
                      cilium_pools=["10.245.0.0/16"], flannel_namespace="kube-flannel",
                      flannel_daemonset="kube-flannel-ds", timeout_seconds=30)


def daemonset(name: str, ready: int, desired: int = 3) -> Obj:
    return {"metadata": {"name": name, "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": desired,
                       "updatedNumberScheduled": desired, "numberReady": ready,
                       "numberAvailable": ready}}


def cluster(flannel_ready: int = 3, cilium_ready: int = 3) -> FakeKube:
    kube = FakeKube()
    for name in ("node-1", "node-2", "node-3"):
        kube.add("/api/v1/nodes", node(name))
        kube.add("/api/v1/namespaces/kube-system/pods",
                 pod(f"cilium-{name}", name, namespace="kube-system", owner="DaemonSet",
                     labels={"k8s-app": "cilium"}, host_network=True))
    kube.add("/api/v1/namespaces/apps/pods", pod("web", "node-2", ip="10.245.2.4"))
    kube.add(FLANNEL_SETS, daemonset("kube-flannel-ds", flannel_ready))
    kube.add(CILIUM_SETS, daemonset("cilium", cilium_ready))
    return kube


def set_ready(kube: FakeKube, collection: str, name: str, ready: int) -> None:
    kube.request("PATCH", f"{collection}/{name}",
                 {"status": {"numberReady": ready, "numberAvailable": ready}})


def run(kube: FakeKube, request: HealthInput = REQUEST) -> tuple[HealthReport, list[Any]]:
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    return env.run(check_health, kube, request), beats


def test_a_daemonset_that_catches_up_is_waited_for_not_reported() -> None:
    """Right after a reboot the controller's numberReady lags: one look said 2/3."""
    kube = cluster(flannel_ready=2)
    kube.while_waiting.append(
        lambda kube: set_ready(kube, FLANNEL_SETS, "kube-flannel-ds", 3))
    report, beats = run(kube)
    assert report.problems == [] and report.flannel_ready
    assert beats == [{"problems": ["flannel: 2/3 ready, 3 up to date"]}]
    assert (report.pods_on_cilium, report.pods_total) == (1, 1)


def test_only_what_did_not_converge_by_the_deadline_is_reported() -> None:
    kube = cluster(cilium_ready=2)
    kube.request("PATCH", "/api/v1/nodes/node-3",
                 {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    # The agents' DaemonSet catches up; node-3 never comes back.
    kube.while_waiting.append(lambda kube: set_ready(kube, CILIUM_SETS, "cilium", 3))
    report, beats = run(kube)
    assert report.problems == ["node node-3 is not Ready"]
    assert beats[0] == {"problems": ["node node-3 is not Ready",
                                     "Cilium agents: 2/3 ready, 3 up to date"]}


def test_a_switched_nodes_agent_that_turns_ready_counts_it_on_cilium() -> None:
    kube = cluster()
    kube.request("PATCH", "/api/v1/nodes/node-1", {"metadata": {"labels": {MIGRATION_LABEL:
                                                                           "true"}}})
    kube.request("PATCH", "/api/v1/namespaces/kube-system/pods/cilium-node-1",
                 {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    kube.while_waiting.append(lambda kube: kube.request(
        "PATCH", "/api/v1/namespaces/kube-system/pods/cilium-node-1",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    report, beats = run(kube)
    assert report.problems == [] and report.nodes_on_cilium == 1
    assert beats == [{"problems": [
        "node node-1 is switched to Cilium but its agent is not Ready"]}]


def test_a_healthy_cluster_is_reported_at_once_and_a_missing_daemonset_is_a_problem() -> None:
    kube = cluster()
    report, beats = run(kube)
    assert report.problems == [] and beats == [] and kube.waits == 0
    kube.request("DELETE", f"{FLANNEL_SETS}/kube-flannel-ds")
    report, _ = run(kube, REQUEST.model_copy(update={"timeout_seconds": 0}))
    assert report.problems == ["flannel DaemonSet kube-flannel/kube-flannel-ds not found"]
    assert not report.flannel_ready


def test_the_default_wait_fits_in_the_time_the_workflow_gives_the_step() -> None:
    """The workflow runs the check as a default step: SHORT, plus 30 s to start and finish."""
    default = HealthInput(cluster=ClusterRef(name="c"), cilium_namespace="kube-system",
                          cilium_pools=[], flannel_namespace=None, flannel_daemonset=None)
    assert 0 < default.timeout_seconds <= SHORT.total_seconds()


def test_pods_are_counted_a_page_at_a_time(monkeypatch: Any) -> None:
    """A cluster's pods are never listed whole: 150,000 of them would be hundreds of MB."""
    monkeypatch.setattr("activities.pod_addresses.POD_PAGE", 2)
    kube = cluster()
    for index in range(4):  # four more on Cilium, one on flannel, one host-network
        kube.add("/api/v1/namespaces/apps/pods", pod(f"app-{index}", "node-1",
                                                     ip=f"10.245.1.{index + 10}"))
    kube.add("/api/v1/namespaces/apps/pods", pod("old", "node-3", ip="10.244.3.5"))
    kube.add("/api/v1/namespaces/apps/pods", pod("host", "node-3", host_network=True))
    pod_lists: list[dict[str, Any]] = []
    answer = kube.request

    def recorded(method: str, path: str, body: Any = None,
                 query: dict[str, Any] | None = None, **rest: Any) -> Any:
        if method == "GET" and path == "/api/v1/pods":
            pod_lists.append(dict(query or {}))
        return answer(method, path, body, query, **rest)

    monkeypatch.setattr(kube, "request", recorded)
    report, _ = run(kube)
    assert (report.pods_on_cilium, report.pods_total) == (5, 6)
    # Six on a pod network, on pages of two; the host's four are left out by the server.
    assert len(pod_lists) == 3
    assert all(q.get("limit") == 2 for q in pod_lists)
    assert all(q["fieldSelector"] == "status.phase=Running,spec.hostNetwork=false"
               for q in pod_lists)
