"""The connectivity monitor without a cluster: a fake cluster of echo pods whose pod proxy
answers as agnhost's /dial does (or as the API server does when it cannot reach the pod), a
clock that moves only when the monitor pauses, and Temporal's ActivityEnvironment for
heartbeats and cancellation."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import CancelledError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

from activities import connectivity
from activities.connectivity import (
    Echo,
    dial,
    hostname,
    in_service,
    monitor_connectivity,
    sample_pairs,
)
from plan.contract import (
    ECHO_APP,
    PAIR_KINDS,
    ConnectivityFigures,
    FailedRequest,
    MonitorInput,
    PairCounts,
)
from plan.policies import ClusterRef, ConnectivityPolicy, Overlays
from tests.fake_kube import FakeKube, FollowedEchoPods, api_error, node, pod

NS = "cilium-migrate-echo"
FLANNEL_NETWORK = "10.244.0.0/16"
CILIUM_POOL = "10.245.0.0/16"
PODS = f"/api/v1/namespaces/{NS}/pods"
REFUSAL = ("the simulated network carries no packets: {ip} is data here, and this host's "
           "default route would take a packet to it off the machine")


@pytest.fixture(autouse=True)
def _echo_pods_followed_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connectivity, "EchoPods", FollowedEchoPods)  # no thread on the fake


def address(i: int, cilium: bool) -> str:
    return f"10.{245 if cilium else 244}.{i // 250}.{i % 250 + 1}"


def cluster(nodes: int, cilium: set[int] | frozenset[int] = frozenset()) -> FakeKube:
    """``nodes`` nodes, each with one echo pod ``echo-I`` on ``node-I``; the nodes in
    ``cilium`` have their pod on the Cilium pool, the others on the flannel network."""
    kube = FakeKube()
    for i in range(nodes):
        kube.add("/api/v1/nodes", node(f"node-{i}"))
        kube.add(PODS, pod(f"echo-{i}", f"node-{i}", namespace=NS, owner="DaemonSet",
                           labels={"app.kubernetes.io/name": ECHO_APP},
                           ip=address(i, i in cilium)))
    return kube


class EchoNetwork:
    """The pod proxy into agnhost netexec's /dial: targets answer with their pod's name, except
    ``dead`` ones (by IP), which make the dial report an error, as agnhost does."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.dead: set[str] = set()
        self.refuse_all = False  # the simulated sandbox: every pod proxy target refused
        self.unreachable_sources: set[str] = set()  # pods the API server cannot reach
        self.dials: list[tuple[str, str]] = []  # (source pod, target IP)
        self.on_dial: Callable[[str, str], None] | None = None
        kube.pod_proxy = self

    def pod(self, name: str) -> dict[str, Any]:
        return self.kube.objects[("/api/v1", "pods", NS, name)]

    def __call__(self, target: str, path: str, query: dict[str, Any]) -> Any:
        namespace, _, rest = target.partition("/")
        name, _, port = rest.partition(":")
        assert (namespace, port, path) == (NS, "8080", "dial")
        assert {k: query[k] for k in ("request", "protocol", "port", "tries")} == {
            "request": "hostname", "protocol": "http", "port": "8080", "tries": "1"}
        ip = self.pod(name)["status"]["podIP"]
        if self.refuse_all or name in self.unreachable_sources:
            reason = REFUSAL.format(ip=ip) if self.refuse_all else "connection refused"
            raise api_error(503, f"error trying to reach service: proxy error dialing "
                                 f"{ip}:8080: {reason}", "ServiceUnavailable")
        host = query["host"]
        self.dials.append((name, host))
        if self.on_dial is not None:
            self.on_dial(name, host)
        if host in self.dead:
            return {"errors": [f'Get "http://{host}:8080/hostname": context deadline exceeded']}
        answering = next(o for (_, r, _, _), o in self.kube.objects.items()
                         if r == "pods" and o["status"].get("podIP") == host)
        return {"responses": [answering["metadata"]["name"]]}


def monitor_input(*, max_failed: int = 100, window: float = 60, interval: float = 5,
                  pairs: int = 16, wave: int = 1, duration: float = 3600,
                  stop_on_breach: bool = True) -> MonitorInput:
    return MonitorInput(
        cluster=ClusterRef(name="c"), wave=wave, duration_seconds=duration,
        stop_on_breach=stop_on_breach,
        policy=ConnectivityPolicy(namespace=NS, image="agnhost", max_failed_requests=max_failed,
                                  window_seconds=window, interval_seconds=interval,
                                  sample_pairs=pairs),
        overlays=Overlays(cilium_namespace="kube-system", cilium_pools=[CILIUM_POOL],
                          flannel_network=FLANNEL_NETWORK))


@dataclasses.dataclass
class Run:
    figures: ConnectivityFigures
    beats: list[dict[str, Any]]  # heartbeat details, in order
    pauses: int


def run(kube: FakeKube, request: MonitorInput, monkeypatch: pytest.MonkeyPatch, *,
        rounds: int = 1, env: ActivityEnvironment | None = None,
        details: dict[str, Any] | None = None,
        cancel: Callable[[ActivityEnvironment], None] | None = None) -> Run:
    """Runs the step in an activity environment that cancels it (as the workflow does when
    the wave is done) once ``rounds`` rounds were reported. The clock moves only in pauses."""
    env = env or ActivityEnvironment()
    if details is not None:
        env.info = dataclasses.replace(env.info, heartbeat_details=[details])
    beats: list[dict[str, Any]] = []
    env.on_heartbeat = lambda *d: beats.append(d[0])
    now = [1000.0]
    pauses = [0]

    def pause(seconds: float) -> None:
        pauses[0] += 1
        now[0] += seconds
        if beats and beats[-1]["figures"]["rounds"] >= rounds:
            (cancel or (lambda e: e.cancel()))(env)

    monkeypatch.setattr(connectivity, "clock", lambda: now[0])
    monkeypatch.setattr(connectivity, "pause", pause)
    figures = env.run(monitor_connectivity, kube, request)
    return Run(figures=figures, beats=beats, pauses=pauses[0])


def echo(i: int, cilium: bool = False) -> Echo:
    return Echo(name=f"echo-{i}", node=f"node-{i}", ip=address(i, cilium),
                overlay="cilium" if cilium else "flannel")


# ---- sampling -------------------------------------------------------------------------------

def test_a_round_at_1000_nodes_costs_one_list_and_the_sampled_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(1000, cilium=set(range(0, 1000, 3)))
    network = EchoNetwork(kube)
    result = run(kube, monitor_input(pairs=16), monkeypatch, rounds=3)
    figures = result.figures
    assert figures.rounds == 3 and figures.requests == 48 and figures.failed == 0
    # Every kind present is asked every round, a third of the budget each (6, 5, 5 in turn).
    assert {k: c.requests for k, c in figures.by_kind.items()} == {
        "flannel-flannel": 16, "flannel-cilium": 16, "cilium-cilium": 16}
    gets = Counter(path for method, path, _ in kube.requests if method == "GET")
    # The echo pods are listed once (then watched); the cordoned nodes every round.
    assert gets[PODS] == 1 and gets["/api/v1/nodes"] == 3
    assert sum(n for path, n in gets.items() if "/proxy/" in path) == len(network.dials) == 48
    assert len(kube.requests) == 1 + 3 + 48  # no node or pod read one by one
    # The lists come from the watch cache, and only cordoned nodes are listed.
    assert all(d["figures"]["rounds"] <= 3 for d in result.beats)


def test_the_node_list_asks_only_for_cordoned_nodes_from_the_watch_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    asked: list[dict[str, Any]] = []
    plain = kube.request

    def recording(method: str, path: str, body: Any = None,
                  query: dict[str, Any] | None = None, **kw: Any) -> Any:
        if path in ("/api/v1/nodes", PODS):
            asked.append({"path": path, **(query or {})})
        return plain(method, path, body, query, **kw)

    monkeypatch.setattr(kube, "request", recording)
    kube.objects[("/api/v1", "nodes", "", "node-2")]["spec"]["unschedulable"] = True
    pods = kube.get(PODS, labelSelector=f"app.kubernetes.io/name={ECHO_APP}")["items"]
    asked.clear()
    echoes = in_service(kube, monitor_input(), pods)
    assert [e.name for e in echoes] == ["echo-0", "echo-1"]
    assert asked == [
        {"path": "/api/v1/nodes", "fieldSelector": "spec.unschedulable=true",
         "resourceVersion": "0"}]


def test_sampling_spreads_over_kinds_and_covers_every_node_over_rounds() -> None:
    echoes = [echo(i, cilium=i % 3 == 0) for i in range(1000)]
    sources: set[str] = set()
    targets: set[str] = set()
    for r in range(200):
        pairs = sample_pairs(echoes, 16, r, seed="1")
        assert len(pairs) == 16
        assert all(s.node != t.node for s, t in pairs)
        kinds = Counter(connectivity.pair_kind(s, t) for s, t in pairs)
        assert set(kinds) == set(PAIR_KINDS) and min(kinds.values()) >= 5
        # flannel-cilium is asked both ways
        directions = {(s.overlay, t.overlay) for s, t in pairs}
        assert {("flannel", "cilium"), ("cilium", "flannel")} <= directions
        sources |= {s.name for s, _ in pairs}
        targets |= {t.name for _, t in pairs}
    assert len(sources) == len(targets) == 1000
    # The same round of the same wave picks the same pairs; another round others.
    assert sample_pairs(echoes, 16, 7, seed="1") == sample_pairs(echoes, 16, 7, seed="1")
    assert sample_pairs(echoes, 16, 7, seed="1") != sample_pairs(echoes, 16, 8, seed="1")


def test_a_budget_smaller_than_the_kinds_reaches_each_over_rounds() -> None:
    echoes = [echo(0), echo(1), echo(2, cilium=True), echo(3, cilium=True)]
    seen = Counter(connectivity.pair_kind(s, t) for r in range(8)
                   for s, t in sample_pairs(echoes, 1, r))
    assert set(seen) == set(PAIR_KINDS) and sum(seen.values()) == 8


def test_no_pairs_without_two_nodes_or_only_one_overlay_present() -> None:
    assert sample_pairs([echo(0)], 16, 0) == []
    only_flannel = sample_pairs([echo(0), echo(1)], 16, 0)
    assert {(s.name, t.name) for s, t in only_flannel} == {("echo-0", "echo-1"),
                                                           ("echo-1", "echo-0")}


# ---- one request ----------------------------------------------------------------------------

class Answering(FakeKube):
    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str | None = None,
                timeout: float | tuple[float, float] = 30.0) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("answer", "outcome", "detail"), [
    ({"responses": ["echo-1"]}, "ok", ""),
    ({"errors": ["dial tcp 10.244.0.2:8080: i/o timeout"]}, "failed",
     "dial tcp 10.244.0.2:8080: i/o timeout"),
    ({"responses": ["someone-else"]}, "failed", "answered by someone-else, not echo-1"),
    ({}, "failed", "no answer"),
    (api_error(503, "error trying to reach service: dial tcp 10.244.0.1:8080: connect: "
                    "connection refused"), "undelivered",
     "HTTP 503: error trying to reach service: dial tcp <address>: connect: connection refused"),
    (api_error(502, "error trying to reach service"), "undelivered",
     "HTTP 502: error trying to reach service"),
    (TimeoutError("read timed out"), "undelivered", "TimeoutError: read timed out"),
    (["not", "dial"], "undelivered", "the source pod's answer is not agnhost's /dial JSON"),
])
def test_a_dial_is_ok_failed_or_undelivered(answer: Any, outcome: str, detail: str) -> None:
    call = dial(Answering(answer), NS, echo(0), echo(1))
    assert (call.outcome, call.detail) == (outcome, detail)


def test_the_answer_is_the_hostname_the_kubelet_gives_a_long_pod_name() -> None:
    long_name = "cilium-migrate-echo-" + "x" * 42 + "-abcde"
    assert hostname(long_name) == long_name[:62]  # cut at 63, without the trailing '-'
    target = dataclasses.replace(echo(1), name=long_name)
    assert dial(Answering({"responses": [long_name[:62]]}), NS, echo(0), target).outcome == "ok"


# ---- counting -------------------------------------------------------------------------------

def test_answered_requests_are_counted_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(4, cilium={2, 3})
    EchoNetwork(kube)
    figures = run(kube, monitor_input(pairs=6), monkeypatch, rounds=2).figures
    assert (figures.requests, figures.failed, figures.rounds) == (12, 0, 2)
    # Two flannel pods have two pairs, both asked each round; so have the two Cilium pods;
    # flannel-cilium has eight, two asked a round, one each way.
    assert figures.by_kind == {"flannel-flannel": PairCounts(requests=4),
                               "flannel-cilium": PairCounts(requests=4),
                               "cilium-cilium": PairCounts(requests=4)}
    assert (figures.in_maintenance, figures.unreachable, figures.unavailable) == (0, 0, None)
    assert figures.started_at is not None and figures.ended_at is not None
    assert not figures.breached


def test_a_failed_dial_is_counted_with_its_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(2, cilium={1})
    network = EchoNetwork(kube)
    network.dead.add(address(1, cilium=True))
    figures = run(kube, monitor_input(pairs=2), monkeypatch).figures
    assert (figures.requests, figures.failed) == (2, 1)
    assert figures.by_kind == {"flannel-cilium": PairCounts(requests=2, failed=1)}
    [failure] = figures.failures
    assert failure.model_dump(exclude={"at"}) == {
        "kind": "flannel-cilium", "source": "echo-0", "source_node": "node-0",
        "source_ip": "10.244.0.1", "target": "echo-1", "target_node": "node-1",
        "target_ip": "10.245.0.2",
        "error": 'Get "http://10.245.0.2:8080/hostname": context deadline exceeded'}


@pytest.mark.parametrize("maintenance", ["cordoned", "rebooting", "pod-replaced"])
def test_a_failure_whose_end_went_into_maintenance_is_not_a_failure(
        maintenance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    network = EchoNetwork(kube)
    network.dead.add(address(2, cilium=False))

    def meanwhile(source: str, target_ip: str) -> None:
        if target_ip != address(2, cilium=False):
            return
        node_2 = kube.objects[("/api/v1", "nodes", "", "node-2")]
        if maintenance == "cordoned":
            node_2["spec"]["unschedulable"] = True
        elif maintenance == "rebooting":
            node_2["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
        else:
            network.pod("echo-2")["status"]["podIP"] = "10.245.9.9"

    network.on_dial = meanwhile
    figures = run(kube, monitor_input(pairs=6, max_failed=0), monkeypatch).figures
    assert figures.failed == 0 and not figures.breached
    assert figures.in_maintenance == sum(1 for _, ip in network.dials
                                         if ip == address(2, cilium=False)) > 0
    assert figures.requests == len(network.dials) - figures.in_maintenance


def test_calls_the_api_server_cannot_deliver_are_unreachable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    network = EchoNetwork(kube)
    network.unreachable_sources.add("echo-0")
    figures = run(kube, monitor_input(pairs=6, max_failed=0), monkeypatch).figures
    assert figures.unreachable == 2 and figures.requests == 4
    assert figures.failed == 0 and figures.unavailable is None


def test_the_simulated_network_makes_the_monitor_unavailable_never_failing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(6, cilium={3, 4, 5})
    network = EchoNetwork(kube)
    network.refuse_all = True
    figures = run(kube, monitor_input(pairs=16, max_failed=0), monkeypatch, rounds=3).figures
    assert (figures.requests, figures.failed, figures.in_maintenance) == (0, 0, 0)
    assert figures.unreachable == 48 and not figures.breached and figures.rounds == 3
    assert figures.unavailable is not None
    assert "the simulated network carries no packets" in figures.unavailable
    assert figures.unavailable.startswith("HTTP 503: error trying to reach service")
    assert "10.24" not in figures.unavailable  # one reason for all pods: no address in it


def test_a_single_node_mesh_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(1)
    EchoNetwork(kube)
    figures = run(kube, monitor_input(), monkeypatch).figures
    assert figures.unavailable == "no two echo pods in service on different nodes"
    assert figures.requests == 0


# ---- the window ---------------------------------------------------------------------------

def test_more_failures_than_allowed_within_the_window_end_the_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(2)
    network = EchoNetwork(kube)
    network.dead |= {address(0, False), address(1, False)}
    # One failed request every 5 s; three within 12 s are one too many.
    result = run(kube, monitor_input(pairs=1, max_failed=2, window=12, interval=5),
                 monkeypatch, rounds=100)
    figures = result.figures
    assert figures.breached and figures.worst_window == 3
    assert (figures.rounds, figures.failed) == (3, 3)
    assert figures.ended_at is not None


def test_failures_spread_wider_than_the_window_do_not_breach(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(2)
    network = EchoNetwork(kube)
    network.dead |= {address(0, False), address(1, False)}
    figures = run(kube, monitor_input(pairs=1, max_failed=2, window=8, interval=5),
                  monkeypatch, rounds=5).figures
    assert not figures.breached and figures.worst_window == 2
    assert (figures.rounds, figures.failed) == (5, 5)
    assert len(figures.failures) == 5


def test_after_a_halt_the_monitor_only_counts_and_stays_breached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rollout halted already: the wave's next monitor goes on counting until cancelled
    instead of ending at every failure, and its figures keep saying a window was breached."""
    kube = cluster(2)
    network = EchoNetwork(kube)
    network.dead |= {address(0, False), address(1, False)}
    figures = run(kube, monitor_input(pairs=1, max_failed=0, window=12, interval=5,
                                      stop_on_breach=False), monkeypatch, rounds=6).figures
    assert (figures.rounds, figures.failed) == (6, 6)
    assert figures.breached and figures.worst_window == 3


def test_a_long_wave_gets_its_figures_every_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a cancel the step ends after its duration: a wave waiting days for a decision
    records one result per duration, not one step that never ends."""
    kube = cluster(3)
    EchoNetwork(kube)
    figures = run(kube, monitor_input(interval=5, duration=30), monkeypatch,
                  rounds=1_000).figures
    assert figures.rounds == 6 and figures.requests > 0 and figures.failed == 0
    assert figures.ended_at is not None


# ---- heartbeats, retries, cancellation -------------------------------------------------------

def test_heartbeats_carry_the_figures_and_a_retry_resumes_from_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    EchoNetwork(kube)
    first = run(kube, monitor_input(pairs=4), monkeypatch, rounds=2)
    assert first.figures.started_at is not None
    last = first.beats[-1]
    assert set(last) == {"figures"}
    assert ConnectivityFigures.model_validate(last["figures"]).rounds == 2
    earlier = ConnectivityFigures(
        requests=10, failed=1, rounds=4, worst_window=1, unreachable=3,
        by_kind={"flannel-flannel": PairCounts(requests=10, failed=1)},
        failures=[FailedRequest(at=first.figures.started_at, kind="flannel-flannel",
                                source="echo-0", source_node="node-0", source_ip="10.244.0.1",
                                target="echo-1", target_node="node-1", target_ip="10.244.0.2",
                                error="timeout")],
        started_at=first.figures.started_at)
    resumed = run(kube, monitor_input(pairs=4), monkeypatch, rounds=5,
                  details={"figures": earlier.model_dump(mode="json")}).figures
    assert (resumed.rounds, resumed.requests, resumed.failed) == (5, 14, 1)
    assert (resumed.unreachable, resumed.worst_window) == (3, 1)
    assert resumed.by_kind == {"flannel-flannel": PairCounts(requests=14, failed=1)}
    assert resumed.failures == earlier.failures
    assert resumed.started_at == earlier.started_at


def test_a_cancel_delivered_with_a_heartbeat_returns_the_figures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporal raises CancelledError in the activity's thread when a heartbeat's answer says
    the workflow cancelled it; the step returns its figures instead of raising."""
    kube = cluster(3)
    EchoNetwork(kube)
    env = ActivityEnvironment()
    beats = 0

    def heartbeat(*details: Any) -> None:
        nonlocal beats
        beats += 1
        if details[0]["figures"]["rounds"] >= 2:
            env.cancel()

    now = [0.0]
    monkeypatch.setattr(connectivity, "clock", lambda: now[0])
    monkeypatch.setattr(connectivity, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    env.on_heartbeat = heartbeat
    figures = env.run(monitor_connectivity, kube, monitor_input(pairs=4))
    assert figures.rounds == 2 and figures.requests == 8
    assert figures.ended_at is not None and not figures.breached


def test_a_cancel_while_calls_are_out_returns_without_waiting_for_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    network = EchoNetwork(kube)
    env = ActivityEnvironment()
    released = threading.Event()

    def hang(source: str, target_ip: str) -> None:
        if len(network.dials) > 4:  # the second round's calls hang until the test ends
            released.wait(30)

    network.on_dial = hang
    env.on_heartbeat = lambda *details: (env.cancel() if len(network.dials) > 4 else None)
    now = [0.0]
    monkeypatch.setattr(connectivity, "HEARTBEAT_SECONDS", 0.01)
    monkeypatch.setattr(connectivity, "clock", lambda: now[0])
    monkeypatch.setattr(connectivity, "pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    try:
        figures = env.run(monitor_connectivity, kube, monitor_input(pairs=4))
    finally:
        released.set()
    assert figures.rounds == 1 and figures.requests == 4  # the cut round is not counted


def test_a_worker_shutting_down_retries_instead_of_returning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the workflow's cancel ends the wave's monitor; a worker going away or a lost
    heartbeat fails the attempt, and the next one resumes from the last heartbeat."""
    kube = cluster(3)
    EchoNetwork(kube)
    with pytest.raises(CancelledError):
        run(kube, monitor_input(pairs=4), monkeypatch, rounds=1,
            cancel=lambda env: env.cancel(ActivityCancellationDetails(worker_shutdown=True)))


@activity.defn(name="monitor", no_thread_cancel_exception=True)
def monitor_without_thread_cancel(kube: FakeKube, request: MonitorInput) -> ConnectivityFigures:
    return monitor_connectivity(kube, request)


@pytest.mark.parametrize("requested", [True, False])
def test_registered_without_thread_cancel_exceptions_the_same_rule_holds(
        requested: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    kube = cluster(3)
    EchoNetwork(kube)
    env = ActivityEnvironment()
    beats: list[dict[str, Any]] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    monkeypatch.setattr(connectivity, "clock", lambda: float(len(beats)))
    details = ActivityCancellationDetails(cancel_requested=requested,
                                          worker_shutdown=not requested)
    monkeypatch.setattr(connectivity, "pause", lambda seconds: env.cancel(details))
    if requested:
        figures = env.run(monitor_without_thread_cancel, kube, monitor_input(pairs=4))
        assert figures.rounds == 1 and figures.requests == 4
    else:
        with pytest.raises(CancelledError):
            env.run(monitor_without_thread_cancel, kube, monitor_input(pairs=4))


def test_metrics_count_requests_and_failures_by_wave_and_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = ActivityEnvironment()
    env.metric_meter = runtime.metric_meter
    kube = cluster(2, cilium={1})
    network = EchoNetwork(kube)
    network.dead.add(address(1, cilium=True))
    run(kube, monitor_input(pairs=2, wave=3), monkeypatch, env=env)
    totals: Counter[tuple[str, str]] = Counter()
    gauges: dict[str, float] = {}
    for update in buffer.retrieve_updates():
        attributes = dict(update.attributes)
        if update.metric.name == connectivity.IN_SERVICE_METRIC:
            gauges[str(attributes["overlay"])] = update.value
            continue
        assert attributes["wave"] == 3
        totals[(update.metric.name, str(attributes.get("kind")))] += int(update.value)
    assert totals == {("cilium_migrate_connectivity_requests", "flannel-cilium"): 2,
                      ("cilium_migrate_connectivity_failed_requests", "flannel-cilium"): 1}
    assert gauges == {"flannel": 1, "cilium": 1}


def test_a_pause_between_rounds_ends_when_the_cancel_arrives() -> None:
    """The wave waits for its monitor's figures: a cancel must not wait out the pause."""
    env = ActivityEnvironment()
    woke = threading.Event()

    def pause_an_hour() -> None:
        try:
            connectivity.pause(3600)
        finally:  # the cancel is raised in the activity's thread as it wakes
            woke.set()

    def run_activity() -> None:
        with contextlib.suppress(CancelledError):
            env.run(pause_an_hour)

    sleeper = threading.Thread(target=run_activity, daemon=True)
    sleeper.start()
    assert not woke.wait(0.2)  # still paused
    env.cancel()
    assert woke.wait(60), "the pause went on after the cancel"
