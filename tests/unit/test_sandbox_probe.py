"""The simulated probe pod, without a cluster: it must print what the product's probe script
would print in the same situation (`plan.contract.ProbeReport`), so the verify activity judges
a sandbox probe exactly as it judges a real one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from activities.verify import judge, read_report
from plan.contract import ProbeReport
from plan.spec import DEFAULT_IMAGE
from sandbox.simulator import busybox
from sandbox.simulator.datapath import SimulatedDatapath
from sandbox.simulator.faults import Fault
from sandbox.simulator.hostfs import HostFs
from sandbox.simulator.personalities import Probe, personality_of
from sandbox.simulator.state import NodeState, PodState
from sandbox.topology import NodeSpec
from tests.unit.test_activities_verify import CILIUM_PEER, FLANNEL_PEER, request

PEERS = [FLANNEL_PEER.ip, CILIUM_PEER.ip]
COREDNS_IP = "10.244.3.2"
ECHO = {"name": "echo", "image": "registry.k8s.io/e2e-test-images/agnhost:2.59",
        "args": ["netexec", "--http-port=8080"]}
COREDNS = {"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.1",
           "args": ["-conf", "/etc/coredns/Corefile"]}


def running(name: str, ip: str, container: dict[str, Any], ready: bool = True) -> PodState:
    return PodState(uid=name, namespace="kube-system", name=name, node="node-2",
                    obj={"spec": {"containers": [container]}}, ip=ip, started=True,
                    container_statuses=[{"name": container["name"], "ready": ready}])


def cluster_pods() -> dict[str, PodState]:
    """An echo pod at each peer address and one Ready CoreDNS pod."""
    pods = [running(f"echo-{index}", ip, ECHO) for index, ip in enumerate(PEERS)]
    return {p.uid: p for p in [*pods, running("coredns", COREDNS_IP, COREDNS)]}


@dataclass
class Faults:
    set_on: dict[str, set[Fault]] = field(default_factory=dict)

    def has(self, node: str, fault: Fault) -> bool:
        return fault in self.set_on.get(node, set())


@dataclass
class Sim:
    """The few things the probe asks the simulator."""

    healthz: tuple[int | None, tuple[str, ...]] = (200, ())
    reachable_ips: set[str] = field(default_factory=lambda: {*PEERS, COREDNS_IP})
    faults: Faults = field(default_factory=Faults)
    ended: list[tuple[int, str]] = field(default_factory=list)
    dialled: int = 0
    pods: dict[str, PodState] = field(default_factory=cluster_pods)
    services: dict[tuple[str, str], str] = field(default_factory=lambda: {
        ("default", "kubernetes"): "10.96.0.1", ("kube-system", "kube-dns"): "10.96.0.10"})

    def service_cluster_ip(self, namespace: str, name: str) -> str | None:
        return self.services.get((namespace, name))

    def healthz_answer(self) -> tuple[int | None, tuple[str, ...]]:
        self.dialled += 1
        return self.healthz

    @property
    def datapath(self) -> SimulatedDatapath:
        return RulesOfThisTest(self)  # type: ignore[arg-type]

    def complete_pod(self, pod: PodState, exit_code: int, message: str) -> None:
        self.ended.append((exit_code, message))


class RulesOfThisTest(SimulatedDatapath):
    """The simulated datapath, with reachability as the test sets it."""

    def reachable(self, source: NodeState, source_ip: str, target_ip: str) -> bool:
        return target_ip in self.sim.reachable_ips  # type: ignore[attr-defined]


def run_probe(sim: Sim, tmp_path: Path, image: str = DEFAULT_IMAGE,
              namespace: str = "cilium-migrate", dns_name: str = "kubernetes.default",
              **spec: Any) -> tuple[int, ProbeReport]:
    node = NodeState(spec=NodeSpec(name="node-1", internal_ip="127.0.10.1", zone="a"),
                     host=HostFs(tmp_path))
    obj: dict[str, Any] = {
        "metadata": {"labels": {"cilium-migrate.io/probe": "true"}},
        "spec": {**spec, "containers": [{"name": "probe", "image": image, "env": [
            {"name": "PROBE_PEERS", "value": ",".join(PEERS)},
            {"name": "PROBE_DNS_NAME", "value": dns_name}]}]}}
    pod = PodState(uid="u1", namespace=namespace, name="probe", node="node-1", obj=obj,
                   ip="10.245.0.5", started=True)
    personality = personality_of(pod)
    assert isinstance(personality, Probe)
    personality.on_started(sim, node, pod)  # type: ignore[arg-type]
    [(code, message)] = sim.ended
    return code, ProbeReport.model_validate_json(message)


def verdicts(report: ProbeReport) -> dict[str, tuple[str, str]]:
    """How the verify activity judges the report."""
    pod = {"status": {"phase": "Succeeded", "podIP": report.pod_ip, "containerStatuses": [
        {"state": {"terminated": {"exitCode": 0,
                                  "message": report.model_dump_json(by_alias=True)}}}]}}
    probe = read_report(request(), {"flannel": FLANNEL_PEER, "cilium": CILIUM_PEER}, pod, pod)
    return {c.name: (c.outcome, c.detail) for c in judge(probe, ["api-server", "peer-cilium"])}


def test_an_api_server_that_refuses_anonymous_requests_still_answered(tmp_path: Path) -> None:
    code, report = run_probe(Sim(healthz=(401, ())), tmp_path)
    assert (code, report.api_server.status, report.api_server.error) == (0, 401, "")
    assert report.peers == dict.fromkeys(PEERS, True)
    assert verdicts(report)["api-server"][0] == "passed"


def test_busybox_before_1_37_fails_the_handshake_as_it_does_against_real_api_servers(
        tmp_path: Path) -> None:
    sim = Sim()
    code, report = run_probe(sim, tmp_path, image="docker.io/library/busybox:1.36.1-musl")
    assert code == 1 and report.api_server.status is None
    assert report.api_server.error == (
        "wget: TLS error from peer (alert code 40): handshake failure; "
        "wget: error getting response: Connection reset by peer")
    assert sim.dialled == 0
    assert verdicts(report)["api-server"] == (
        "failed", f"/healthz did not answer: {report.api_server.error}")


def test_the_probe_fails_fault_is_silence(tmp_path: Path) -> None:
    sim = Sim(faults=Faults({"node-1": {Fault.PROBE_FAILS}}))
    code, report = run_probe(sim, tmp_path)
    assert code == 1
    assert (report.api_server.status, report.api_server.error) == (
        None, "wget: download timed out")
    assert report.peers == dict.fromkeys(PEERS, False)


def test_an_unreached_peer_fails_the_pod_and_its_check(tmp_path: Path) -> None:
    code, report = run_probe(Sim(reachable_ips={FLANNEL_PEER.ip}), tmp_path)
    assert code == 1
    assert verdicts(report)["peer-cilium"][0] == "failed"


@pytest.mark.parametrize("image, version", [
    ("busybox:1.37.0", (1, 37)), ("busybox:1.36", (1, 36)),
    ("registry.example:5000/mirror/busybox:1.36.1-glibc", (1, 36)),
    ("busybox:1.36.1@sha256:abc", (1, 36)), ("busybox", None), ("busybox:latest", None),
    ("curlimages/curl:8.11.0", None),
])
def test_busybox_versions_are_read_from_the_image_tag(image: str,
                                                      version: tuple[int, int] | None) -> None:
    assert busybox.busybox_version(image) == version


def test_the_default_image_is_one_whose_wget_completes_the_handshake() -> None:
    assert not busybox.tls_handshake_fails(DEFAULT_IMAGE)
    assert busybox.busybox_version(DEFAULT_IMAGE) is not None  # pinned, not "latest"


def test_the_report_is_one_json_line(tmp_path: Path) -> None:
    sim = Sim()
    run_probe(sim, tmp_path)
    assert "\n" not in sim.ended[0][1] and json.loads(sim.ended[0][1])["node"] == "node-1"


# ---- DNS: what the script's lookups of kubernetes.default print ------------------------------

TIMED_OUT = ";; connection timed out; no servers could be reached"


def test_kubernetes_default_resolves_through_the_services_search_domain(tmp_path: Path) -> None:
    code, report = run_probe(Sim(), tmp_path)
    assert code == 0
    assert report.dns is not None
    assert report.dns.model_dump() == {
        "name": "kubernetes.default.svc.cluster.local", "addresses": ["10.96.0.1"], "error": ""}


@pytest.mark.parametrize("change", ["no kube-dns", "coredns unreachable", "coredns not ready",
                                    "no coredns", "probe-fails"])
def test_without_a_reachable_ready_coredns_behind_kube_dns_nslookup_times_out(
        change: str, tmp_path: Path) -> None:
    sim = Sim()
    if change == "no kube-dns":
        del sim.services[("kube-system", "kube-dns")]
    elif change == "coredns unreachable":
        sim.reachable_ips.discard(COREDNS_IP)
    elif change == "coredns not ready":
        sim.pods["coredns"] = running("coredns", COREDNS_IP, COREDNS, ready=False)
    elif change == "no coredns":
        del sim.pods["coredns"]
    else:
        sim.faults = Faults({"node-1": {Fault.PROBE_FAILS}})
    code, report = run_probe(sim, tmp_path)
    assert code == 1
    assert report.dns is not None
    assert report.dns.model_dump() == {"name": "kubernetes.default", "addresses": [],
                                       "error": TIMED_OUT}


def test_a_pod_without_the_cluster_search_list_asks_the_bare_name_only(tmp_path: Path) -> None:
    """dnsPolicy None with no search domain: the name as given is outside CoreDNS's zones."""
    code, report = run_probe(Sim(), tmp_path, dnsPolicy="None",
                             dnsConfig={"nameservers": ["10.96.0.10"]})
    assert code == 1
    assert report.dns is not None and report.dns.addresses == []
    assert report.dns.error == ("** server can't find kubernetes.default: SERVFAIL; "
                                "** server can't find kubernetes.default: SERVFAIL")


# ---- peers: an HTTP GET of /hostname on agnhost netexec's port 8080 --------------------------

@pytest.mark.parametrize("container, reached", [
    (ECHO, True),
    ({**ECHO, "args": ["netexec"]}, True),  # netexec's default --http-port is 8080
    ({**ECHO, "command": ["/agnhost"], "args": ["netexec", "--http-port", "8080"]}, True),
    ({**ECHO, "args": ["netexec", "--http-port=9090"]}, False),
    ({**ECHO, "args": ["pause"]}, False),
    ({"name": "web", "image": "nginx:1.27"}, False),
])
def test_a_peer_answers_only_when_it_runs_agnhost_netexec_on_8080(
        container: dict[str, Any], reached: bool, tmp_path: Path) -> None:
    sim = Sim()
    sim.pods["echo-1"] = running("echo-1", PEERS[1], container)
    code, report = run_probe(sim, tmp_path)
    assert report.peers == {PEERS[0]: True, PEERS[1]: reached}
    assert code == (0 if reached else 1)


def test_a_probe_asked_for_no_lookup_reports_none_and_needs_none(tmp_path: Path) -> None:
    """The script looks a name up only when PROBE_DNS_NAME names one (`dns` not among the
    spec's checks): no `dns` in the report, and the exit code does not wait for one."""
    # No CoreDNS reachable: a lookup would fail, and none is made.
    code, report = run_probe(Sim(reachable_ips=set(PEERS)), tmp_path, dns_name="")
    assert report.dns is None and report.peers == dict.fromkeys(PEERS, True)
    assert code == 0
