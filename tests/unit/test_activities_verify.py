"""Verification without a cluster: each check's verdict on a probe's report, the peers chosen,
reading the probe pod, and the whole step against a fake cluster whose probe reports back."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubeapi import Obj
from activities.verify import CHECKS, Peer, Probe, choose_peers, judge, read_report, verify_node
from plan.contract import PROBE_LABEL, NodeRef, StepError, VerifyInput, VerifyResult
from plan.policies import ClusterRef, Overlays, VerifyPolicy
from plan.spec import VERIFY_CHECKS
from tests.fake_kube import FakeKube, node, pod

CILIUM_POOL = "10.245.0.0/16"
FLANNEL_NETWORK = "10.244.0.0/16"
FLANNEL_PEER = Peer(ip="10.244.2.7", pod="apps/web-1", node="node-2")
CILIUM_PEER = Peer(ip="10.245.3.9", pod="apps/web-2", node="node-3")


def request(expect: Literal["cilium", "flannel"] = "cilium",
            flannel_network: str | None = FLANNEL_NETWORK) -> VerifyInput:
    return VerifyInput(
        target=NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="m"),
        policy=VerifyPolicy(image="busybox", checks=list(VERIFY_CHECKS), timeout_seconds=30),
        overlays=Overlays(cilium_namespace="kube-system", cilium_pools=[CILIUM_POOL],
                          flannel_network=flannel_network),
        expect=expect)


def probe(pod_ip: str | None = "10.245.0.5", *, expect: Literal["cilium", "flannel"] = "cilium",
          flannel_network: str | None = FLANNEL_NETWORK, api_server: bool = True,
          reached: dict[str, bool] | None = None, problem: str = "",
          peers: dict[str, Peer | None] | None = None) -> Probe:
    return Probe(request=request(expect, flannel_network),
                 peers={"flannel": FLANNEL_PEER, "cilium": CILIUM_PEER} if peers is None
                 else peers,
                 pod_ip=pod_ip, api_server=api_server, reached=reached or {}, problem=problem)


def verdict(name: str, of: Probe) -> tuple[bool, str]:
    [result] = judge(of, [name])
    assert result.name == name
    return result.passed, result.detail


# ---- pod-ip-in-pool -----------------------------------------------------------------------

def test_pod_ip_in_the_cilium_pool() -> None:
    assert verdict("pod-ip-in-pool", probe("10.245.0.5")) == (
        True, f"10.245.0.5 is in {CILIUM_POOL}")
    assert verdict("pod-ip-in-pool", probe("10.244.1.5")) == (
        False, f"10.244.1.5 is outside the cilium range {CILIUM_POOL}")


def test_pod_ip_in_the_flannel_network_after_a_rollback() -> None:
    assert verdict("pod-ip-in-pool", probe("10.244.1.5", expect="flannel")) == (
        True, f"10.244.1.5 is in {FLANNEL_NETWORK}")
    assert verdict("pod-ip-in-pool", probe("10.245.0.5", expect="flannel")) == (
        False, f"10.245.0.5 is outside the flannel range {FLANNEL_NETWORK}")


def test_pod_ip_on_flannel_cannot_pass_without_a_flannel_network() -> None:
    assert verdict("pod-ip-in-pool", probe("10.244.1.5", expect="flannel",
                                           flannel_network=None)) == (
        False, "no flannel network to compare with")
    # Expecting Cilium does not need the flannel network.
    assert verdict("pod-ip-in-pool", probe("10.245.0.5", flannel_network=None))[0]


def test_pod_ip_in_pool_fails_when_the_probe_got_no_address() -> None:
    assert verdict("pod-ip-in-pool", probe(None, problem="the probe did not finish")) == (
        False, "the probe got no IP (the probe did not finish)")
    assert verdict("pod-ip-in-pool", probe(None)) == (False, "the probe got no IP (no report)")


# ---- api-server ---------------------------------------------------------------------------

def test_api_server_check_follows_the_report() -> None:
    assert verdict("api-server", probe(api_server=True)) == (True, "/healthz answered")
    assert verdict("api-server", probe(api_server=False)) == (False, "/healthz did not answer")
    assert verdict("api-server", probe(api_server=True, problem="no report")) == (
        False, "no report")


# ---- peers --------------------------------------------------------------------------------

def test_peer_checks_pass_only_for_the_peer_reached() -> None:
    reached = probe(reached={FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False})
    assert verdict("peer-flannel", reached) == (
        True, "reached 10.244.2.7 (apps/web-1 on node-2)")
    assert verdict("peer-cilium", reached) == (
        False, "did not reach 10.245.3.9 (apps/web-2 on node-3)")
    # A peer the report does not mention was not reached.
    assert not verdict("peer-flannel", probe(reached={}))[0]


def test_a_peer_check_without_a_peer_passes_and_says_so() -> None:
    lonely = probe(peers={"flannel": FLANNEL_PEER, "cilium": None},
                   reached={FLANNEL_PEER.ip: True})
    assert verdict("peer-cilium", lonely) == (True, "no peer on cilium nodes yet")
    assert verdict("peer-flannel", probe(peers={}, problem="no report")) == (
        True, "no peer on flannel nodes yet")


def test_a_peer_check_fails_with_the_probes_problem() -> None:
    assert verdict("peer-cilium", probe(problem="the probe wrote no report: boom")) == (
        False, "10.245.3.9 (apps/web-2 on node-3): the probe wrote no report: boom")


def test_an_unknown_check_fails_and_lists_the_known_ones() -> None:
    results = judge(probe(reached={FLANNEL_PEER.ip: True, CILIUM_PEER.ip: True}),
                    ["api-server", "no-such-check", "peer-cilium"])
    assert [(r.name, r.passed) for r in results] == [
        ("api-server", True), ("no-such-check", False), ("peer-cilium", True)]
    assert results[1].detail == f"unknown check; known: {sorted(CHECKS)}"


def test_every_check_the_spec_offers_has_a_function() -> None:
    assert set(VERIFY_CHECKS) == set(CHECKS)


# ---- reading the probe pod ----------------------------------------------------------------

def ended(message: str, phase: str = "Succeeded", ip: str = "10.245.0.5") -> Obj:
    return {"status": {"phase": phase, "podIP": ip, "containerStatuses": [
        {"state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                  "message": message}}}]}}


def test_the_report_is_read_from_the_termination_message() -> None:
    report = {"podIP": "10.245.0.6", "node": "node-1", "apiServer": True,
              "peers": {FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False}}
    pod_ = ended(json.dumps(report), phase="Failed")
    read = read_report(request(), {}, pod_, pod_)
    assert (read.pod_ip, read.api_server, read.problem) == ("10.245.0.6", True, "")
    assert read.reached == {FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False}


def test_a_probe_without_a_report_keeps_its_address_and_says_why() -> None:
    pod_ = ended("wget: not found\n", phase="Failed", ip="10.245.0.7")
    read = read_report(request(), {}, pod_, pod_)
    assert read.pod_ip == "10.245.0.7" and not read.api_server
    assert read.problem == "the probe wrote no report: wget: not found"


def test_a_probe_that_did_not_finish_says_its_phase() -> None:
    read = read_report(request(), {}, None, {"status": {"phase": "Pending"}})
    assert read.pod_ip is None
    assert read.problem == "the probe did not finish within 30s (pod Pending)"
    assert read_report(request(), {}, None, None).problem.endswith("(pod gone)")


# ---- choosing peers -----------------------------------------------------------------------

def test_peers_are_ready_pods_on_other_nodes_one_per_overlay_in_a_stable_order() -> None:
    kube = FakeKube()
    pods = "/api/v1/namespaces/apps/pods"
    for each in [
        pod("same-node", "node-1", ip="10.244.1.2"),
        pod("host", "node-2", ip="10.244.2.2", host_network=True),
        pod("not-ready", "node-2", ip="10.244.2.3", ready=False),
        pod("probe", "node-2", ip="10.244.2.4", labels={PROBE_LABEL: "true"}),
        pod("pending", "node-2", ip="10.244.2.5", phase="Pending"),
        pod("b-flannel", "node-3", ip="10.244.3.2"),
        pod("a-flannel", "node-3", ip="10.244.3.3"),
        pod("late-flannel", "node-4", ip="10.244.4.2"),
        pod("cilium", "node-5", ip="10.245.5.2"),
    ]:
        kube.add(pods, each)
    assert choose_peers(kube, request()) == {
        "flannel": Peer(ip="10.244.3.3", pod="apps/a-flannel", node="node-3"),
        "cilium": Peer(ip="10.245.5.2", pod="apps/cilium", node="node-5")}
    # Without a flannel network nothing counts as a flannel peer.
    assert choose_peers(kube, request(flannel_network=None))["flannel"] is None


# ---- the step -----------------------------------------------------------------------------

def cluster(reach: set[str]) -> FakeKube:
    """Node-1 to verify, a peer on each overlay, and a kubelet that runs the probe: it gets
    a Cilium address and reaches the peers in ``reach``."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    kube.add("/api/v1/namespaces/apps/pods", pod("web-1", "node-2", ip=FLANNEL_PEER.ip))
    kube.add("/api/v1/namespaces/apps/pods", pod("web-2", "node-3", ip=CILIUM_PEER.ip))

    def run_probe(kube: FakeKube) -> None:
        for key, obj in kube.objects.items():
            if key[1] == "pods" and (obj["metadata"].get("labels") or {}).get(PROBE_LABEL):
                env = {e["name"]: e.get("value") for e in obj["spec"]["containers"][0]["env"]}
                peers = env["PROBE_PEERS"].split(",")
                report: dict[str, Any] = {"podIP": "10.245.0.5", "node": "node-1",
                                          "apiServer": True,
                                          "peers": {ip: ip in reach for ip in peers}}
                ok = all(ip in reach for ip in peers)
                obj["status"] = ended(json.dumps(report), "Succeeded" if ok else "Failed",
                                      "10.245.0.5")["status"]

    kube.while_waiting.append(run_probe)
    return kube


def test_the_step_passes_when_the_probe_reaches_both_peers() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip, CILIUM_PEER.ip})
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed and result.pod_ip == "10.245.0.5"
    assert [c.name for c in result.checks] == list(VERIFY_CHECKS)
    assert kube.events()[-1][0] == "CiliumMigrateVerified"
    kube.pass_time()
    assert kube.pods() == ["apps/web-1", "apps/web-2"]  # the probe was removed


def test_the_step_fails_typed_with_the_checks_when_a_peer_is_not_reached() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip})
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(verify_node, kube, request())
    error = raised.value
    assert error.type == StepError.VERIFICATION_FAILED and error.non_retryable
    failed = [c["name"] for c in error.details[0]["checks"] if not c["passed"]]
    assert failed == ["peer-cilium"]
    assert kube.events()[-1][0] == "CiliumMigrateVerifyFailed"
