"""The connectivity monitor: while a wave's nodes move, echo pods call each other across nodes
and overlays, and the monitor counts the requests that got no answer.

The echo mesh's pods are listed once and kept current by a watch (`EchoPods`). Each round
samples a bounded number of (source, target) pairs on different nodes among those in service,
spread over the pair kinds present (flannel-flannel, flannel-cilium either way, cilium-cilium),
and has every source's agnhost `netexec` /dial its target through the API server's pod proxy.
A round costs one list (the cordoned nodes), `sample_pairs` proxied calls and, per failed
request, a re-read of its two ends: never one request per node, whatever the cluster's size.

The step runs for one wave: the workflow cancels it when the wave's nodes are done, and it then
returns its figures (it does not raise); a long wave's monitor also returns after
`duration_seconds`, and the workflow starts the next. It returns early, `breached`, once more
than `max_failed_requests` failed within one `window_seconds`, unless told only to count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.rest import ApiException
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.context import heartbeat, metric_meter, resumed
from activities.kubeapi import (
    WATCH_WINDOW_SECONDS,
    Followed,
    Kube,
    Obj,
    condition_true,
    pod_ready,
    unschedulable,
)
from activities.pod_addresses import overlay_ranges, range_of
from plan.contract import (
    ECHO_PORT,
    ECHO_SELECTOR,
    FAILURES_KEPT,
    PAIR_KINDS,
    ConnectivityFigures,
    FailedRequest,
    MonitorInput,
    PairCounts,
    PairKind,
)

log = logging.getLogger(__name__)

# agnhost's /dial gives up on its target after 5 s (its HTTP client's timeout), so a call still
# unanswered after this long was held up between the API server and the source pod.
DIAL_TIMEOUT_SECONDS = 10.0
DIAL_WORKERS = 16
HEARTBEAT_SECONDS = 1.0  # the longest the step goes without heartbeating, so noticing a cancel
REASON_LIMIT = 300

REQUESTS_METRIC = "cilium_migrate_connectivity_requests"
FAILED_METRIC = "cilium_migrate_connectivity_failed_requests"
UNREACHABLE_METRIC = "cilium_migrate_connectivity_unreachable_calls"
IN_SERVICE_METRIC = "cilium_migrate_connectivity_echo_pods_in_service"


def _sleep_unless_cancelled(seconds: float) -> None:
    """Sleeps, but wakes as soon as a cancel arrives: the wave waits for the monitor's figures
    before it goes on, so each moment between the cancel and its noticing is the wave's."""
    if activity.in_activity():
        activity.wait_for_cancelled_sync(timedelta(seconds=seconds))
    else:
        time.sleep(seconds)


clock, pause = time.monotonic, _sleep_unless_cancelled  # module attributes: tests stand in

_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9a-fA-F:]+\](?::\d+)?")


@dataclass(frozen=True)
class Echo:
    """An echo pod in service: Ready, addressed, on a node neither cordoned nor NotReady."""

    name: str
    node: str
    ip: str
    overlay: str  # "flannel" or "cilium"


@dataclass(frozen=True)
class Call:
    """What one proxied /dial came to: ``outcome`` is "ok", "failed" (the dial ran and the
    target did not answer as itself) or "undelivered" (the source pod was never asked)."""

    outcome: str
    detail: str = ""


@dataclass
class Tally:
    """The figures as they grow; `ConnectivityFigures` is their frozen picture."""

    figures: ConnectivityFigures
    by_kind: dict[PairKind, list[int]] = field(default_factory=dict)  # [requests, failed]
    failures: deque[FailedRequest] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    window: deque[float] = field(default_factory=deque)  # clock() of failures in the window
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def resume(cls, details: dict[str, Any]) -> Tally:
        """From a previous attempt's last heartbeat; its window does not carry over."""
        last = details.get("figures")
        figures = (ConnectivityFigures.model_validate(last) if last
                   else ConnectivityFigures(started_at=datetime.now(UTC)))
        tally = cls(figures=figures)
        tally.by_kind = {k: [c.requests, c.failed] for k, c in figures.by_kind.items()}
        tally.failures.extend(figures.failures)
        tally.counts = figures.model_dump(include={"requests", "failed", "in_maintenance",
                                                   "unreachable", "rounds", "worst_window"})
        return tally

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def picture(self, **update: Any) -> ConnectivityFigures:
        self.figures = self.figures.model_copy(update={
            **self.counts,
            "by_kind": {k: PairCounts(requests=r, failed=f) for k, (r, f) in self.by_kind.items()},
            "failures": list(self.failures), **update})
        return self.figures


# ---- the step -----------------------------------------------------------------------------

def monitor_connectivity(kube: Kube, request: MonitorInput) -> ConnectivityFigures:
    """Rounds of requests between echo pods until the workflow cancels the step (its figures
    are then the result) or the failures breach the policy's window (returned at once)."""
    tally = Tally.resume(resumed())
    try:
        # Temporal cancels a sync activity by raising CancelledError in its thread, anywhere;
        # shielded, it comes at the end of this block, after the loop saw `is_cancelled()` and
        # stopped between two rounds, so no round is counted by half.
        with _shielded():
            _run(kube, request, tally)
    except CancelledError:
        if not _cancel_requested():
            raise  # a worker shutting down or a lost heartbeat: retried, and resumed
    # Registered with no_thread_cancel_exception, a cancel raises nothing: the same rule.
    if _cancelled() and not _cancel_requested():
        raise CancelledError("cancelled by the worker, not the workflow")
    return tally.picture(ended_at=datetime.now(UTC))


def _run(kube: Kube, request: MonitorInput, tally: Tally) -> None:
    policy = request.policy
    # Not a `with`: leaving one joins the pool's threads, and a cancel must not wait for
    # calls still out (each ends within its timeout on its own).
    pool = ThreadPoolExecutor(max_workers=min(DIAL_WORKERS, policy.sample_pairs),
                              thread_name_prefix="echo-dial")
    echo_pods = EchoPods(kube, policy.namespace)
    ends = clock() + request.duration_seconds
    try:
        while not _cancelled() and clock() < ends:
            started = clock()
            if not _round(kube, request, tally, pool, echo_pods):
                return  # cancelled while its calls were out: that round is not counted
            _heartbeat(tally)
            if tally.figures.breached and request.stop_on_breach:
                return
            _pause_until(min(started + policy.interval_seconds, ends), tally)
    finally:
        echo_pods.close()
        pool.shutdown(wait=False, cancel_futures=True)


def _round(kube: Kube, request: MonitorInput, tally: Tally, pool: ThreadPoolExecutor,
           echo_pods: EchoPods) -> bool:
    """One round of requests, added to ``tally``; False when cancelled before all answered."""
    policy, wave = request.policy, request.wave
    echoes = in_service(kube, request, echo_pods.current())
    gauge = metric_meter().create_gauge(
        IN_SERVICE_METRIC, "Echo pods in service that the connectivity monitor could call, by "
        "wave and overlay")
    for overlay in ("flannel", "cilium"):
        gauge.set(sum(e.overlay == overlay for e in echoes), {"wave": wave, "overlay": overlay})
    pairs = sample_pairs(echoes, policy.sample_pairs, tally.counts.get("rounds", 0),
                         seed=str(wave))
    calls = {pool.submit(dial, kube, policy.namespace, source, target): (source, target)
             for source, target in pairs}
    if not _gather(calls.keys(), tally):
        return False
    undelivered = _count(kube, request, tally,
                         [(future.result(), *pair) for future, pair in calls.items()])
    _close_round(tally, request, len(pairs), undelivered)
    return True


def _count(kube: Kube, request: MonitorInput, tally: Tally,
           calls: list[tuple[Call, Echo, Echo]]) -> list[str]:
    """Adds a round's calls to ``tally`` and the metrics; returns why the undelivered ones
    were not delivered."""
    meter, wave, namespace = metric_meter(), request.wave, request.policy.namespace
    requests = meter.create_counter(
        REQUESTS_METRIC, "Requests between echo pods that the connectivity monitor counted, by "
        "wave and pair kind")
    failed = meter.create_counter(
        FAILED_METRIC, "Requests between echo pods in service that got no answer, by wave and "
        "pair kind")
    unreachable = meter.create_counter(
        UNREACHABLE_METRIC, "Calls the API server could not deliver to a source echo pod, by "
        "wave")
    now, at = clock(), datetime.now(UTC)
    undelivered: list[str] = []
    for call, source, target in calls:
        kind = pair_kind(source, target)
        if call.outcome == "undelivered":
            tally.add("unreachable")
            undelivered.append(call.detail)
            unreachable.add(1, {"wave": wave})
            continue
        if call.outcome == "failed" and not (_still_in_service(kube, namespace, source)
                                             and _still_in_service(kube, namespace, target)):
            tally.add("in_maintenance")
            continue
        counts = tally.by_kind.setdefault(kind, [0, 0])
        counts[0] += 1
        tally.add("requests")
        requests.add(1, {"wave": wave, "kind": kind})
        if call.outcome == "failed":
            counts[1] += 1
            tally.add("failed")
            failed.add(1, {"wave": wave, "kind": kind})
            tally.window.append(now)
            tally.failures.append(FailedRequest(
                at=at, kind=kind, source=source.name, source_node=source.node,
                source_ip=source.ip, target=target.name, target_node=target.node,
                target_ip=target.ip, error=call.detail))
    return undelivered


def _close_round(tally: Tally, request: MonitorInput, pairs: int,
                 undelivered: list[str]) -> None:
    """The window slides to now; breached and unavailable as the round leaves them."""
    policy = request.policy
    now = clock()
    while tally.window and tally.window[0] <= now - policy.window_seconds:
        tally.window.popleft()
    tally.add("rounds")
    tally.counts["worst_window"] = max(tally.counts.get("worst_window", 0), len(tally.window))
    # Once breached, the figures say so for good: a window held too many failures.
    update: dict[str, Any] = {"breached": tally.figures.breached
                              or len(tally.window) > policy.max_failed_requests}
    if tally.counts.get("requests", 0):
        update["unavailable"] = None
    elif not pairs:
        update["unavailable"] = "no two echo pods in service on different nodes"
    elif len(undelivered) == pairs and len(set(undelivered)) == 1:
        # Every call refused alike, and never a request: the monitor cannot see the network
        # (the simulated sandbox's pod proxy carries no packets, say); nothing failed.
        update["unavailable"] = undelivered[0]
    tally.picture(**update)


# ---- who is in service ----------------------------------------------------------------------

class EchoPods:
    """The echo mesh's pods as the server has them: listed once, then kept current by a watch
    read on a thread of its own, so a round finds them without listing them. At 5,000 nodes a
    list every round (5 s) moved and parsed some 25 MB of pods, in the worker and in the API
    server; the watch moves only the pods that change.

    A round reads the latest picture (`current`). Should the watch fail for good (not an
    expired resourceVersion, which it lists again for), each round lists them itself, from the
    API server's watch cache."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube, self._path = kube, f"/api/v1/namespaces/{namespace}/pods"
        followed = kube.follow(self._path, {"labelSelector": ECHO_SELECTOR})
        self._pods: list[Obj] = followed.objects  # replaced whole, never changed in place
        self._stop = threading.Event()
        self._broken = False
        threading.Thread(target=self._follow, args=(followed,), name="echo-pods",
                         daemon=True).start()

    def current(self) -> list[Obj]:
        if self._broken:
            items: list[Obj] = self._kube.get(self._path, labelSelector=ECHO_SELECTOR,
                                              resourceVersion="0")["items"]
            return items
        return self._pods

    def close(self) -> None:
        """The watch ends at its window's end (within WATCH_WINDOW_SECONDS): nothing waits
        for it."""
        self._stop.set()

    def _follow(self, followed: Followed) -> None:
        try:
            while not self._stop.is_set():
                followed.wait(self._seen, WATCH_WINDOW_SECONDS)
        except Exception as error:  # noqa: BLE001 - the rounds list instead
            log.warning("the echo pods' watch failed (%s); each round lists them instead",
                        error)
            self._broken = True
        finally:
            followed.close()

    def _seen(self, pods: list[Obj]) -> bool:
        self._pods = pods
        return self._stop.is_set()


def in_service(kube: Kube, request: MonitorInput, pods: list[Obj]) -> list[Echo]:
    """The echo pods in service among ``pods``, each with the overlay its address is on.

    One list a round, with resourceVersion=0 (served from the API server's watch cache, not read
    from etcd): only the cordoned nodes (`spec.unschedulable` is a field selector the server
    serves), a handful during a wave where listing every node would move megabytes per round at
    5,000 nodes. A NotReady node is told by its pods: the node lifecycle controller marks them
    not Ready; and a failed request re-reads its ends, so a node that went NotReady meanwhile
    makes that failure `in_maintenance`.
    """
    cordoned = {n["metadata"]["name"] for n in kube.get(
        "/api/v1/nodes", fieldSelector="spec.unschedulable=true", resourceVersion="0")["items"]}
    ranges = overlay_ranges(request.overlays)
    echoes = []
    for pod in pods:
        ip, node = (pod.get("status") or {}).get("podIP"), pod["spec"].get("nodeName")
        if not (ip and node and pod_ready(pod)) or node in cordoned:
            continue
        overlay = next((o for o, cidrs in ranges.items() if range_of(ip, cidrs)), None)
        if overlay is not None:
            echoes.append(Echo(name=pod["metadata"]["name"], node=node, ip=ip, overlay=overlay))
    return echoes


def _still_in_service(kube: Kube, namespace: str, echo: Echo) -> bool:
    """Re-read after a failed request: the pod Ready with the same address on the same node,
    and the node neither cordoned nor NotReady."""
    pod = kube.get_or_none(f"/api/v1/namespaces/{namespace}/pods/{echo.name}")
    if (pod is None or not pod_ready(pod) or (pod.get("status") or {}).get("podIP") != echo.ip
            or pod["spec"].get("nodeName") != echo.node):
        return False
    node = kube.get_or_none(f"/api/v1/nodes/{echo.node}")
    return node is not None and not unschedulable(node) and condition_true(node, "Ready")


# ---- which pairs ----------------------------------------------------------------------------

def pair_kind(source: Echo, target: Echo) -> PairKind:
    overlays = {source.overlay, target.overlay}
    if overlays == {"flannel"}:
        return "flannel-flannel"
    return "cilium-cilium" if overlays == {"cilium"} else "flannel-cilium"


def sample_pairs(echoes: list[Echo], budget: int, round_number: int,
                 seed: str = "") -> list[tuple[Echo, Echo]]:
    """Up to ``budget`` (source, target) pairs on different nodes, split evenly over the pair
    kinds present (flannel-cilium half each way), so every kind is asked every round the budget
    allows. Sources and targets rotate through their overlay's pods round after round, so every
    node calls and is called within a few rounds; the same round of the same wave picks the
    same pairs (``seed``), which tests and a retried attempt can count on."""
    by_overlay = {o: sorted((e for e in echoes if e.overlay == o), key=lambda e: (e.node, e.name))
                  for o in ("flannel", "cilium")}
    flannel, cilium = by_overlay["flannel"], by_overlay["cilium"]
    routes: dict[PairKind, list[tuple[list[Echo], list[Echo]]]] = {}
    if _nodes(flannel) >= 2:
        routes["flannel-flannel"] = [(flannel, flannel)]
    if flannel and cilium and _nodes(flannel + cilium) >= 2:
        routes["flannel-cilium"] = [(flannel, cilium), (cilium, flannel)]
    if _nodes(cilium) >= 2:
        routes["cilium-cilium"] = [(cilium, cilium)]
    kinds = [kind for kind in PAIR_KINDS if kind in routes]
    pairs: dict[tuple[Echo, Echo], None] = {}  # in the order chosen
    for i, kind in enumerate(kinds):
        # Each kind walks its own line of positions, budget/len(kinds) of them a round, from
        # where the last round stopped. Staggered by i/len(kinds), the kinds' shares add up to
        # the budget every round (Hermite's identity) and a budget smaller than the number of
        # kinds reaches each kind in turn.
        first = (round_number * budget + i) // len(kinds)
        last = ((round_number + 1) * budget + i) // len(kinds)
        ways = routes[kind]
        for position in range(first, last):
            way, step = position % len(ways), position // len(ways)  # flannel-cilium alternates
            pair = _pair(*ways[way], step, f"{seed}/{kind}/{way}", taken=pairs)
            if pair is not None:
                pairs[pair] = None
    return list(pairs)


def _pair(sources: list[Echo], targets: list[Echo], step: int, seed: str,
          taken: dict[tuple[Echo, Echo], None]) -> tuple[Echo, Echo] | None:
    """The ``step``-th pair of a direction: sources in turn, each with the target in turn from
    an offset drawn once per pass over the lists (so the pairings change between passes), or
    the next one on another node not yet paired with it."""
    n, m = len(sources), len(targets)
    shift = random.Random(f"{seed}/{step // max(n, m)}").randrange(m)
    source = sources[step % n]
    for k in range(m):
        target = targets[(step + shift + k) % m]
        if target.node != source.node and (source, target) not in taken:
            return source, target
    return None


def _nodes(echoes: list[Echo]) -> int:
    return len({e.node for e in echoes})


# ---- one request ----------------------------------------------------------------------------

def dial(kube: Kube, namespace: str, source: Echo, target: Echo) -> Call:
    """``source``'s agnhost asks ``target`` for its hostname, through the API server's pod
    proxy. agnhost's /dial answers 200 whatever happened to the dial, with JSON
    ``{"responses": [...]}`` for the answers it got and ``{"errors": [...]}`` for the tries that
    failed (netexec.go, dialHandler); any other status is the API server's own (502/503 "error
    trying to reach service") or a refused query, and the source pod never dialled."""
    path = f"/api/v1/namespaces/{namespace}/pods/{source.name}:{ECHO_PORT}/proxy/dial"
    query = {"request": "hostname", "protocol": "http", "host": target.ip,
             "port": str(ECHO_PORT), "tries": "1"}
    try:
        answer = kube.request("GET", path, query=query, timeout=DIAL_TIMEOUT_SECONDS)
    except ApiException as error:
        return Call("undelivered", _reason(error))
    except Exception as error:  # noqa: BLE001 - timeouts, a lost API server, an answer not JSON
        return Call("undelivered", _generalised(f"{type(error).__name__}: {error}"))
    if not isinstance(answer, dict):
        return Call("undelivered", "the source pod's answer is not agnhost's /dial JSON")
    responses = [str(r) for r in answer.get("responses") or []]
    if hostname(target.name) in responses:
        return Call("ok")
    errors = [str(e) for e in answer.get("errors") or []]
    detail = ("; ".join(errors) if errors
              else f"answered by {', '.join(responses)}, not {target.name}" if responses
              else "no answer")
    return Call("failed", detail[:REASON_LIMIT])


def hostname(pod: str) -> str:
    """A pod's hostname as the kubelet sets it: its name, cut to 63 characters without a
    trailing '-' or '.' (what agnhost's /hostname answers)."""
    return pod[:63].rstrip("-.")


def _reason(error: ApiException) -> str:
    """Why the API server did not deliver a call, alike for every pod (addresses removed), so
    that a round's refusals can be told to be one and the same."""
    body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body
    try:
        message = json.loads(body or "").get("message") or ""
    except (ValueError, AttributeError):
        message = str(body or "")
    return _generalised(f"HTTP {error.status}: {message.strip() or error.reason}")


def _generalised(text: str) -> str:
    return " ".join(_ADDRESS.sub("<address>", text).split())[:REASON_LIMIT]


# ---- heartbeats and cancellation ------------------------------------------------------------

def _heartbeat(tally: Tally) -> None:
    """The figures so far: what a retried attempt resumes from (`Tally.resume`)."""
    heartbeat(figures=tally.figures.model_dump(mode="json"))


def _gather(futures: Iterable[Future[Call]], tally: Tally) -> bool:
    """Waits for the calls, heartbeating; False as soon as the step is cancelled."""
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
        if pending:
            _heartbeat(tally)
            if _cancelled():
                return False
    return True


def _pause_until(deadline: float, tally: Tally) -> None:
    """Sleeps in short slices, heartbeating, so a cancel is noticed within a slice."""
    while not _cancelled() and (remaining := deadline - clock()) > 0:
        pause(min(remaining, HEARTBEAT_SECONDS))
        _heartbeat(tally)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    if activity.in_activity():
        with activity.shield_thread_cancel_exception():
            yield
    else:
        yield


def _cancel_requested() -> bool:
    """The workflow asked for the cancel (the wave is done), rather than a worker going away
    or a heartbeat going unanswered."""
    details = activity.cancellation_details() if activity.in_activity() else None
    return bool(details and details.cancel_requested)


def _cancelled() -> bool:
    """Temporal delivers a cancel in the answer to a heartbeat: true from then on."""
    return activity.in_activity() and activity.is_cancelled()
