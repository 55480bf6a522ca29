"""Verification without a cluster: each check's verdict on a probe's report, the peers chosen,
reading the probe pod, and the whole step against a fake cluster whose probe reports back."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import verify
from activities.kubeapi import Obj
from activities.verify import CHECKS, Peer, Probe, judge, read_report, verify_node
from plan.contract import (
    ECHO_APP,
    PROBE_LABEL,
    CheckResult,
    DnsAnswer,
    NodeRef,
    StepError,
    VerifyInput,
    VerifyResult,
)
from plan.policies import ClusterRef, Overlays, VerifyPolicy
from plan.spec import VERIFY_CHECKS
from tests.fake_kube import FakeKube, node, pod

CILIUM_POOL = "10.245.0.0/16"
FLANNEL_NETWORK = "10.244.0.0/16"
ECHO_NAMESPACE = "cilium-migrate-echo"
ECHO_LABELS = {"app.kubernetes.io/name": ECHO_APP}
FLANNEL_PEER = Peer(ip="10.244.2.7", pod=f"{ECHO_NAMESPACE}/echo-1", node="node-2")
CILIUM_PEER = Peer(ip="10.245.3.9", pod=f"{ECHO_NAMESPACE}/echo-2", node="node-3")
RESOLVED = DnsAnswer(name="kubernetes.default.svc.cluster.local", addresses=["10.96.0.1"])


def request(expect: Literal["cilium", "flannel"] = "cilium",
            flannel_network: str | None = FLANNEL_NETWORK,
            echo_namespace: str | None = ECHO_NAMESPACE) -> VerifyInput:
    return VerifyInput(
        target=NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="m"),
        policy=VerifyPolicy(image="busybox", checks=list(VERIFY_CHECKS), timeout_seconds=30,
                            echo_namespace=echo_namespace),
        overlays=Overlays(cilium_namespace="kube-system", cilium_pools=[CILIUM_POOL],
                          flannel_network=flannel_network),
        expect=expect)


def probe(pod_ip: str | None = "10.245.0.5", *, expect: Literal["cilium", "flannel"] = "cilium",
          flannel_network: str | None = FLANNEL_NETWORK, api_status: int | None = 200,
          api_error: str = "", reached: dict[str, bool] | None = None, problem: str = "",
          peers: dict[str, Peer | None] | None = None, dns: DnsAnswer | None = RESOLVED,
          echo_namespace: str | None = ECHO_NAMESPACE) -> Probe:
    return Probe(request=request(expect, flannel_network, echo_namespace),
                 peers={"flannel": FLANNEL_PEER, "cilium": CILIUM_PEER} if peers is None
                 else peers,
                 pod_ip=pod_ip, api_status=api_status, api_error=api_error,
                 reached=reached or {}, problem=problem, dns=dns)


def verdict(name: str, of: Probe) -> tuple[str, str]:
    [result] = judge(of, [name])
    assert result.name == name
    return result.outcome, result.detail


# ---- pod-ip-in-pool -----------------------------------------------------------------------

def test_pod_ip_in_the_cilium_pool() -> None:
    assert verdict("pod-ip-in-pool", probe("10.245.0.5")) == (
        "passed", f"10.245.0.5 is in {CILIUM_POOL}")
    assert verdict("pod-ip-in-pool", probe("10.244.1.5")) == (
        "failed", f"10.244.1.5 is outside the cilium range {CILIUM_POOL}")


def test_pod_ip_in_the_flannel_network_after_a_rollback() -> None:
    assert verdict("pod-ip-in-pool", probe("10.244.1.5", expect="flannel")) == (
        "passed", f"10.244.1.5 is in {FLANNEL_NETWORK}")
    assert verdict("pod-ip-in-pool", probe("10.245.0.5", expect="flannel")) == (
        "failed", f"10.245.0.5 is outside the flannel range {FLANNEL_NETWORK}")


def test_pod_ip_on_flannel_cannot_pass_without_a_flannel_network() -> None:
    assert verdict("pod-ip-in-pool", probe("10.244.1.5", expect="flannel",
                                           flannel_network=None)) == (
        "failed", "no flannel network to compare with")
    # Expecting Cilium does not need the flannel network.
    assert verdict("pod-ip-in-pool", probe("10.245.0.5", flannel_network=None))[0] == "passed"


def test_pod_ip_in_pool_fails_when_the_probe_got_no_address() -> None:
    assert verdict("pod-ip-in-pool", probe(None, problem="the probe did not finish")) == (
        "failed", "the probe got no IP (the probe did not finish)")
    assert verdict("pod-ip-in-pool", probe(None)) == ("failed", "the probe got no IP (no report)")


# ---- api-server ---------------------------------------------------------------------------

def test_the_api_server_passes_on_any_http_answer() -> None:
    """Reachability is the question: `curl -sk` succeeds on any answer, and so does the check.
    An API server that refuses anonymous requests answers 401 (or 403 without RBAC for them)."""
    assert verdict("api-server", probe(api_status=200)) == ("passed", "/healthz answered HTTP 200")
    for refused in (401, 403):
        assert verdict("api-server", probe(api_status=refused)) == (
            "passed", f"/healthz answered HTTP {refused} (reachable; anonymous requests are "
                      "refused)")
    assert verdict("api-server", probe(api_status=500)) == ("passed", "/healthz answered HTTP 500")


def test_the_api_server_fails_when_nothing_answered_and_says_what_wget_said() -> None:
    tls = ("wget: TLS error from peer (alert code 40): handshake failure; "
           "wget: error getting response: Connection reset by peer")
    assert verdict("api-server", probe(api_status=None, api_error=tls)) == (
        "failed", f"/healthz did not answer: {tls}")
    assert verdict("api-server", probe(api_status=None)) == (
        "failed", "/healthz did not answer: no reason given")
    assert verdict("api-server", probe(api_status=200, problem="no report")) == (
        "failed", "no report")


# ---- dns ----------------------------------------------------------------------------------

def test_dns_passes_with_the_addresses_the_name_resolved_to() -> None:
    assert verdict("dns", probe()) == (
        "passed", "kubernetes.default.svc.cluster.local resolved to 10.96.0.1")
    unresolved = DnsAnswer(name="kubernetes.default",
                           error=";; connection timed out; no servers could be reached")
    assert verdict("dns", probe(dns=unresolved)) == (
        "failed", "kubernetes.default did not resolve: ;; connection timed out; no servers "
                  "could be reached")
    # A report without a lookup (a probe script from before the check) cannot pass it.
    assert verdict("dns", probe(dns=None)) == ("failed", "the probe made no DNS lookup")
    assert verdict("dns", probe(problem="no report")) == ("failed", "no report")


# ---- peers --------------------------------------------------------------------------------

def test_peer_checks_pass_only_for_the_peer_reached() -> None:
    reached = probe(reached={FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False})
    assert verdict("peer-flannel", reached) == (
        "passed", f"http://10.244.2.7:8080/hostname ({ECHO_NAMESPACE}/echo-1 on node-2) "
                  "answered")
    assert verdict("peer-cilium", reached) == (
        "failed", f"http://10.245.3.9:8080/hostname ({ECHO_NAMESPACE}/echo-2 on node-3) did "
                  "not answer")
    # A peer the report does not mention was not reached.
    assert verdict("peer-flannel", probe(reached={}))[0] == "failed"


def test_a_peer_check_without_a_peer_is_not_checked_rather_than_passed() -> None:
    lonely = probe(peers={"flannel": FLANNEL_PEER, "cilium": None},
                   reached={FLANNEL_PEER.ip: True})
    assert verdict("peer-cilium", lonely) == (
        "not-checked", "no Ready echo pod on cilium nodes yet")
    assert verdict("peer-flannel", probe(peers={}, problem="no report")) == (
        "not-checked", "no Ready echo pod on flannel nodes yet")
    assert verdict("peer-flannel", probe(peers={}, echo_namespace=None)) == (
        "not-checked", "no echo mesh in this run")


def test_a_peer_check_fails_with_the_probes_problem() -> None:
    assert verdict("peer-cilium", probe(problem="the probe wrote no report: boom")) == (
        "failed", f"http://10.245.3.9:8080/hostname ({ECHO_NAMESPACE}/echo-2 on node-3): the "
                  "probe wrote no report: boom")


def test_an_unknown_check_fails_and_lists_the_known_ones() -> None:
    results = judge(probe(reached={FLANNEL_PEER.ip: True, CILIUM_PEER.ip: True}),
                    ["api-server", "no-such-check", "peer-cilium"])
    assert [(r.name, r.outcome) for r in results] == [
        ("api-server", "passed"), ("no-such-check", "failed"), ("peer-cilium", "passed")]
    assert results[1].detail == f"unknown check; known: {sorted(CHECKS)}"


def test_a_result_passes_when_nothing_failed_and_not_checked_is_not_a_failure() -> None:
    def result(*outcomes: str) -> VerifyResult:
        return VerifyResult(pod_ip=None, checks=[
            CheckResult.model_validate({"name": f"c{i}", "outcome": o})
            for i, o in enumerate(outcomes)])

    assert result("passed", "not-checked").passed
    assert not result("passed", "not-checked", "failed").passed
    assert result().passed


def test_check_results_recorded_before_outcomes_still_read() -> None:
    """Workflow histories hold {"passed": bool}; replaying them must not fail."""
    assert CheckResult.model_validate({"name": "api-server", "passed": True}).outcome == "passed"
    old = CheckResult.model_validate({"name": "peer-cilium", "passed": False, "detail": "x"})
    assert (old.outcome, old.detail) == ("failed", "x")


def test_every_check_the_spec_offers_has_a_function() -> None:
    assert set(VERIFY_CHECKS) == set(CHECKS)


# ---- reading the probe pod ----------------------------------------------------------------

def ended(message: str, phase: str = "Succeeded", ip: str = "10.245.0.5") -> Obj:
    return {"status": {"phase": phase, "podIP": ip, "containerStatuses": [
        {"state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                  "message": message}}}]}}


def report(status: int | None = 200, error: str = "", **peers: bool) -> str:
    return json.dumps({"podIP": "10.245.0.6", "node": "node-1",
                       "apiServer": {"status": status, "error": error}, "peers": peers})


def test_the_report_is_read_from_the_termination_message() -> None:
    pod_ = ended(json.dumps({"podIP": "10.245.0.6", "node": "node-1",
                             "apiServer": {"status": 401, "error": ""},
                             "dns": {"name": "kubernetes.default.svc.cluster.local",
                                     "addresses": ["10.96.0.1"], "error": ""},
                             "peers": {FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False}}),
                 phase="Failed")
    read = read_report(request(), {}, pod_, pod_)
    assert (read.pod_ip, read.api_status, read.problem) == ("10.245.0.6", 401, "")
    assert read.reached == {FLANNEL_PEER.ip: True, CILIUM_PEER.ip: False}
    assert read.dns == RESOLVED

    pod_ = ended(report(None, "wget: download timed out"), phase="Failed")
    read = read_report(request(), {}, pod_, pod_)
    assert (read.api_status, read.api_error) == (None, "wget: download timed out")


def test_a_probe_without_a_report_keeps_its_address_and_says_why() -> None:
    pod_ = ended("sh: wget: not found\n", phase="Failed", ip="10.245.0.7")
    read = read_report(request(), {}, pod_, pod_)
    assert read.pod_ip == "10.245.0.7" and read.api_status is None
    assert read.problem == "the probe wrote no report: sh: wget: not found"


def test_a_report_in_another_shape_is_no_report() -> None:
    """A probe image running some other script (an old one, say) is not half understood."""
    old = json.dumps({"podIP": "10.245.0.6", "node": "node-1", "apiServer": True, "peers": {}})
    pod_ = ended(old, phase="Failed")
    read = read_report(request(), {}, pod_, pod_)
    assert read.problem.startswith("the probe wrote no report: {")
    assert verdict("api-server", read)[0] == "failed"


def test_a_probe_that_did_not_finish_says_its_phase() -> None:
    read = read_report(request(), {}, None, {"status": {"phase": "Pending"}})
    assert read.pod_ip is None
    assert read.problem == "the probe did not finish within 30s (pod Pending)"
    assert read_report(request(), {}, None, None).problem.endswith("(pod gone)")


# ---- choosing peers -----------------------------------------------------------------------

def test_peers_are_ready_echo_pods_on_other_nodes_one_per_overlay_in_a_stable_order() -> None:
    kube = FakeKube()
    pods = f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods"
    for each in [
        pod("same-node", "node-1", ip="10.244.1.2", labels=ECHO_LABELS),
        pod("host", "node-2", ip="10.244.2.2", host_network=True, labels=ECHO_LABELS),
        pod("not-ready", "node-2", ip="10.244.2.3", ready=False, labels=ECHO_LABELS),
        pod("probe", "node-2", ip="10.244.2.4", labels={PROBE_LABEL: "true"}),
        pod("pending", "node-2", ip="10.244.2.5", phase="Pending", labels=ECHO_LABELS),
        pod("b-flannel", "node-3", ip="10.244.3.2", labels=ECHO_LABELS),
        pod("a-flannel", "node-3", ip="10.244.3.3", labels=ECHO_LABELS),
        pod("late-flannel", "node-4", ip="10.244.4.2", labels=ECHO_LABELS),
        pod("cilium", "node-5", ip="10.245.5.2", labels=ECHO_LABELS),
    ]:
        kube.add(pods, each)
    kube.add("/api/v1/namespaces/apps/pods", pod("workload", "node-2", ip="10.244.2.9"))

    def choose_peers(kube: FakeKube, request: VerifyInput) -> dict[str, Peer | None]:
        """As the step chooses them: among the echo pods the API lists as Running."""
        return verify._find_peers(kube, request)[0]

    assert choose_peers(kube, request()) == {
        "flannel": Peer(ip="10.244.3.3", pod=f"{ECHO_NAMESPACE}/a-flannel", node="node-3"),
        "cilium": Peer(ip="10.245.5.2", pod=f"{ECHO_NAMESPACE}/cilium", node="node-5")}
    # Without a flannel network nothing counts as a flannel peer.
    assert choose_peers(kube, request(flannel_network=None))["flannel"] is None
    # Without an echo mesh there is nothing to call.
    assert choose_peers(kube, request(echo_namespace=None)) == {"flannel": None, "cilium": None}


def test_peers_are_read_a_page_at_a_time_and_no_further_than_both_overlays_need() -> None:
    """At thousands of nodes a whole list of echo pods is megabytes for every verify: the step
    stops reading once each overlay has a peer."""
    def cluster_with_cilium_pod(position: int) -> FakeKube:
        kube = FakeKube()
        for i in range(1, 251):
            on_cilium = i == position
            ip = f"10.245.{i % 250}.2" if on_cilium else f"10.244.{i % 250}.2"
            kube.add(f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods",
                     pod(f"echo-{i:03d}", f"node-{i + 1}", ip=ip, labels=ECHO_LABELS))
        return kube

    def lists(kube: FakeKube) -> int:
        return sum(1 for method, path, _ in kube.requests
                   if method == "GET" and path.endswith(f"{ECHO_NAMESPACE}/pods"))

    early = cluster_with_cilium_pod(position=40)
    peers, _ = verify._find_peers(early, request())
    assert peers["cilium"] == Peer(ip="10.245.40.2", pod=f"{ECHO_NAMESPACE}/echo-040",
                                   node="node-41")
    assert lists(early) == 2  # the echo pods on the node itself, then one page

    late = cluster_with_cilium_pod(position=240)
    peers, _ = verify._find_peers(late, request())
    assert peers["cilium"] is not None and peers["cilium"].node == "node-241"
    assert lists(late) == 1 + 3  # 100 + 100 + 50 pods
    # The flannel peer is the first page's, whichever page the Cilium one came from.
    assert peers["flannel"] == verify._find_peers(early, request())[0]["flannel"]


def test_the_next_verify_asks_for_the_peers_the_last_one_chose_and_reads_no_page() -> None:
    """A wave's verifies each need a peer per overlay: once one has found them, the next ask
    for those two pods by name; a remembered pod no longer usable sends it looking again."""
    kube = FakeKube()
    pods = f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods"
    for i in range(1, 151):
        ip = "10.245.140.2" if i in (140, 145) else f"10.244.{i}.2"
        kube.add(pods, pod(f"echo-{i:03d}", f"node-{i + 1}", ip=ip, labels=ECHO_LABELS))

    def lists() -> int:  # the node's own echo pods, and each page
        return sum(1 for method, path, _ in kube.requests if method == "GET" and path == pods)

    first, runs_echo = verify._find_peers(kube, request())
    assert first["cilium"] == Peer(ip="10.245.140.2", pod=f"{ECHO_NAMESPACE}/echo-140",
                                   node="node-141")
    assert lists() == 1 + 2 and not runs_echo  # 100 + 50 pods
    again, _ = verify._find_peers(kube, request())
    assert again == first
    assert lists() == 3 + 1  # the node's own echo pods only
    assert len(kube.asked("GET", "/echo-140")) == 1

    # The Cilium peer's node reboots: its pod is not Ready, so the next verify looks again.
    [key] = [k for k in kube.objects if k[1] == "pods" and k[3] == "echo-140"]
    kube.objects[key] = pod("echo-140", "node-141", ip="10.245.140.2", ready=False,
                            labels=ECHO_LABELS) | {"metadata": kube.objects[key]["metadata"]}
    moved, _ = verify._find_peers(kube, request())
    assert moved["cilium"] is not None and moved["cilium"].node == "node-146"
    assert moved["flannel"] == first["flannel"]
    assert lists() == 4 + 1 + 2


# ---- the step -----------------------------------------------------------------------------

def cluster(reach: set[str], peers: tuple[Peer, ...] = (FLANNEL_PEER, CILIUM_PEER),
            api_status: int | None = 200, probes: list[set[str]] | None = None,
            pod_ip: str = "10.245.0.5") -> FakeKube:
    """Node-1 to verify, ``peers`` (a pod on each overlay), and a kubelet that runs the probe:
    it gets ``pod_ip``, the API server answers with ``api_status``, and it reaches the peers in
    ``reach``. ``probes`` (if given) records what each probe was asked to reach; the n-th probe
    reaches ``reach`` once ``probes`` holds n entries, so a test can change ``reach`` between
    probes through the list it passed."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    for peer in peers:
        namespace, name = peer.pod.split("/")
        kube.add(f"/api/v1/namespaces/{namespace}/pods",
                 pod(name, peer.node, ip=peer.ip, labels=ECHO_LABELS))

    def run_probe(kube: FakeKube) -> None:
        for key, obj in kube.objects.items():
            if key[1] == "pods" and (obj["metadata"].get("labels") or {}).get(PROBE_LABEL):
                if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                env = {e["name"]: e.get("value") for e in obj["spec"]["containers"][0]["env"]}
                peers = [ip for ip in env["PROBE_PEERS"].split(",") if ip]
                if probes is not None:
                    probes.append(set(peers))
                report: dict[str, Any] = {
                    "podIP": pod_ip, "node": "node-1",
                    "apiServer": {"status": api_status,
                                  "error": "" if api_status else "wget: download timed out"},
                    "peers": {ip: ip in reach for ip in peers}}
                if env["PROBE_DNS_NAME"]:
                    report["dns"] = RESOLVED.model_dump()
                ok = api_status is not None and all(ip in reach for ip in peers)
                obj["status"] = ended(json.dumps(report), "Succeeded" if ok else "Failed",
                                      pod_ip)["status"]

    kube.while_waiting.append(run_probe)
    return kube


def test_the_step_passes_when_the_probe_reaches_both_peers() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip, CILIUM_PEER.ip})
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed and result.pod_ip == "10.245.0.5"
    assert [c.name for c in result.checks] == list(VERIFY_CHECKS)
    assert kube.events()[-1][0] == "CiliumMigrateVerified"
    kube.pass_time()
    assert kube.pods() == [FLANNEL_PEER.pod, CILIUM_PEER.pod]  # the probe was removed


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The step's clock, moved on only by its own pauses between probes."""
    now = [0.0]
    monkeypatch.setattr(verify, "clock", lambda: now[0])
    monkeypatch.setattr(verify, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


def test_the_step_fails_typed_with_the_checks_when_a_peer_stays_unreached(
        fake_clock: list[float]) -> None:
    probes: list[set[str]] = []
    kube = cluster(reach={FLANNEL_PEER.ip}, probes=probes)
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(verify_node, kube, request())
    error = raised.value
    assert error.type == StepError.VERIFICATION_FAILED and error.non_retryable
    failed = [c["name"] for c in error.details[0]["checks"] if c["outcome"] == "failed"]
    assert failed == ["peer-cilium"]
    assert kube.events()[-1][0] == "CiliumMigrateVerifyFailed"
    # Probed again and again until the deadline, never past it.
    timeout = request().policy.timeout_seconds
    assert len(probes) > 1 and fake_clock[0] <= timeout
    assert f"{len(probes)} probes in {timeout:.0f}s" in str(error)


def test_a_peer_unreached_right_after_the_reboot_is_probed_again_and_passes(
        fake_clock: list[float]) -> None:
    """Right after a reboot, the node's routes to the other overlay may not be there yet."""
    probes: list[set[str]] = []
    reach = {FLANNEL_PEER.ip}
    kube = cluster(reach=reach, probes=probes)

    def routes_converge(_: FakeKube) -> None:
        if len(probes) == 1:
            reach.add(CILIUM_PEER.ip)

    kube.while_waiting.insert(0, routes_converge)
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed and len(probes) == 2
    assert kube.events()[-1][0] == "CiliumMigrateVerified"


def test_an_address_outside_the_pool_fails_at_the_first_probe(fake_clock: list[float]) -> None:
    probes: list[set[str]] = []
    kube = cluster(reach={FLANNEL_PEER.ip}, probes=probes, pod_ip="10.244.1.9")
    with pytest.raises(ApplicationError):
        ActivityEnvironment().run(verify_node, kube, request())
    assert len(probes) == 1, "a wrong address does not converge: no point probing again"


def test_the_step_passes_when_the_api_server_refuses_anonymous_requests() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip, CILIUM_PEER.ip}, api_status=401)
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed
    assert result.checks[1].detail == (
        "/healthz answered HTTP 401 (reachable; anonymous requests are refused)")


def test_the_canary_without_cilium_peers_passes_and_says_what_was_not_checked() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip}, peers=(FLANNEL_PEER,))
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed
    assert [(c.name, c.outcome) for c in result.checks] == [
        ("pod-ip-in-pool", "passed"), ("api-server", "passed"), ("dns", "passed"),
        ("peer-flannel", "passed"), ("peer-cilium", "not-checked")]
    reason, message = kube.events()[-1]
    assert reason == "CiliumMigrateVerified"
    assert message == (
        "verified (cilium): pod IP 10.245.0.5; checks passed: pod-ip-in-pool, api-server, "
        "dns, peer-flannel; not checked: peer-cilium (no Ready echo pod on cilium nodes yet)")


def test_the_step_starts_its_watch_from_the_probe_it_created() -> None:
    """No list of the probe's pod: the watch resumes from the creation's resourceVersion."""
    kube = cluster(reach={FLANNEL_PEER.ip, CILIUM_PEER.ip})
    kube.add(f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods",
             pod("echo-0", "node-1", ip="10.245.0.2", owner="DaemonSet", labels=ECHO_LABELS))
    ActivityEnvironment().run(verify_node, kube, request())
    probe = f"/api/v1/namespaces/{request().namespace}/pods"
    echo = f"/api/v1/namespaces/{ECHO_NAMESPACE}/pods"  # the node's own, then the peers
    assert [(method, path) for method, path, _ in kube.requests if "/events" not in path] == [
        ("GET", echo), ("GET", echo), ("POST", probe),
        ("DELETE", f"{probe}/cilium-migrate-probe-node-1")]


def test_an_earlier_attempts_probe_is_replaced_by_a_new_one() -> None:
    kube = cluster(reach={FLANNEL_PEER.ip, CILIUM_PEER.ip})
    probes = f"/api/v1/namespaces/{request().namespace}/pods"
    kube.add(probes, pod("cilium-migrate-probe-node-1", "node-1", ip=None, phase="Pending",
                         labels={"left": "by-an-earlier-attempt"}))
    result: VerifyResult = ActivityEnvironment().run(verify_node, kube, request())
    assert result.passed
    assert [method for method, path, _ in kube.requests
            if path.startswith(probes) and "/events" not in path] == [
        "POST", "DELETE", "GET", "POST", "DELETE"]  # refused, removed, gone, created, cleaned
