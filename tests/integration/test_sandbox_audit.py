"""The sandbox tells the product's requests from everyone else's: the worker has its own user
and the API server's audit log counts requests by user, verb and resource."""

from __future__ import annotations

import pytest

from activities.kubeapi import Kube
from sandbox import audit, pki
from sandbox.cluster import worker_kubeconfig
from tests.conftest import Sandbox
from tests.helpers import wait_for

pytestmark = pytest.mark.sandbox

WORKER = pki.WORKER.user
SIMULATOR = pki.NODE_SIMULATOR.user


def test_the_workers_requests_are_counted_under_its_own_user(sandbox: Sandbox,
                                                            namespace: str) -> None:
    since = audit.mark(sandbox.state_dir)
    worker = Kube(str(worker_kubeconfig(sandbox.state_dir)))
    pods = f"/api/v1/namespaces/{namespace}/pods"
    worker.get("/api/v1/nodes")
    worker.create(pods, {"metadata": {"name": "audited"}, "spec": {
        "containers": [{"name": "app", "image": "nginx"}], "terminationGracePeriodSeconds": 1}})
    # The simulated kubelet runs the pod and reports its status, with its own user.
    wait_for(lambda: worker.get(f"{pods}/audited").get("status", {}).get("phase") == "Running",
             "the pod to run")

    def counted() -> audit.RequestCounts | None:
        counts = audit.count_requests(sandbox.state_dir, since)
        mine = counts.of(WORKER)
        if (mine[audit.RequestKey(WORKER, "create", "pods")] == 1
                and counts.of(SIMULATOR).get(audit.RequestKey(SIMULATOR, "patch",
                                                              "pods/status"))):
            return counts
        return None

    counts = wait_for(counted, "the audit log to record the worker's and the kubelet's requests")
    mine = counts.of(WORKER)
    assert mine[audit.RequestKey(WORKER, "list", "nodes")] == 1
    assert mine[audit.RequestKey(WORKER, "create", "pods")] == 1
    assert mine[audit.RequestKey(WORKER, "get", "pods")] >= 1
    assert all(key.resource != "pods/status" for key in mine), mine
    assert counts.total(WORKER) == sum(mine.values())  # no watch was made
    assert counts.total(WORKER, watches=True) == 0
    assert pki.CONTROLLER_MANAGER.user not in counts.users()  # not recorded: not needed


def test_a_watch_is_counted_once_and_apart(sandbox: Sandbox) -> None:
    since = audit.mark(sandbox.state_dir)
    worker = Kube(str(worker_kubeconfig(sandbox.state_dir)))
    worker.streaming_lists = False  # as against a server without them: list, then watch
    # A wait that never holds: one list, then one watch until its second is over.
    assert worker.wait("/api/v1/namespaces", lambda items: None, 1.0,
                       fieldSelector="metadata.name=default") is None
    counts = wait_for(lambda: (c := audit.count_requests(sandbox.state_dir, since)).total(
        WORKER, watches=True) and c, "the watch to be recorded")
    assert counts.total(WORKER, watches=True) == 1
    assert counts.of(WORKER)[audit.RequestKey(WORKER, "watch", "namespaces")] == 1
    assert counts.of(WORKER)[audit.RequestKey(WORKER, "list", "namespaces")] == 1


def test_a_wait_on_a_server_with_streaming_lists_is_one_watch_and_no_list(
        sandbox: Sandbox) -> None:
    """The sandbox's API server serves streaming lists (WatchList): the wait's list is the
    start of its watch, one request in all."""
    since = audit.mark(sandbox.state_dir)
    worker = Kube(str(worker_kubeconfig(sandbox.state_dir)))
    assert worker.wait("/api/v1/namespaces", lambda items: None, 1.0,
                       fieldSelector="metadata.name=default") is None
    counts = wait_for(lambda: (c := audit.count_requests(sandbox.state_dir, since)).total(
        WORKER, watches=True) and c, "the watch to be recorded")
    assert worker.streaming_lists is True
    assert counts.of(WORKER)[audit.RequestKey(WORKER, "watch", "namespaces")] == 1
    assert counts.total(WORKER) == 0  # no list
