"""Verify a node from the inside: a short-lived probe pod pinned to it reports what a workload
there would see, and each requested check judges one part of that report.

The probe is a shell script for busybox's tools, so the same pod works on any cluster: it asks
the API server's /healthz, resolves `kubernetes.default` through the cluster's DNS, sends an
HTTP request to one echo pod (the migration's echo mesh) on a flannel node and one on a Cilium
node (crossing the overlays is the point of the dual-overlay migration), and writes its findings
as JSON to its termination message (`plan.contract.ProbeReport` is that JSON's contract). The
activity reads the pod's status, so it needs no log access.

A check with nothing to look at (no echo pod on Cilium nodes yet when the canary is verified,
or no echo mesh at all) is reported "not-checked": it neither passes nor fails, and the node's
event and the status view say which checks were not made.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from activities.context import get_node, heartbeat, record_node_event, step_error
from activities.host import pod_name, termination
from activities.kubeapi import Kube, Obj, object_key, pod_finished, pod_ready
from activities.pod_addresses import overlay_ranges, range_of
from plan.contract import (
    ECHO_PORT,
    ECHO_SELECTOR,
    MANAGED_BY,
    PROBE_LABEL,
    CheckResult,
    DnsAnswer,
    ProbeReport,
    StepError,
    VerifyInput,
    VerifyResult,
)

# Where the script writes its report: the container's termination-message path.
REPORT_PATH = "/dev/termination-log"

# The image must provide busybox's sh, wget, nslookup, sed, awk, tr, cut and tail (see
# plan.spec.DEFAULT_IMAGE). wget exits non-zero on any HTTP status it does not take for success
# (401 from an API server that refuses anonymous requests, for instance), so its exit code says
# nothing about reachability: the script reads the status line instead. With -S wget prints
# every answer's status line ("  HTTP/1.1 200 OK"), and on an error status it also says
# "wget: server returned error: HTTP/1.1 401 Unauthorized"; both carry the status. No status
# line means nothing answered, and wget's messages say why.
#
# DNS: the name is looked up as given and then, while the server answers that it cannot find
# it, with each search domain of the pod's resolv.conf in turn, as the pod's resolver would
# (busybox's nslookup is not relied on to apply them). A server that does not answer at all
# ends the lookup there. The addresses are those nslookup prints after the "Name:" line; the
# server's own "Server:" and "Address:" lines come before it, and are left out of the error.
#
# Peers are echo pods (agnhost netexec): each gets an HTTP GET of /hostname, which is what the
# workloads on either overlay would see; no raw sockets, so the pod needs no capability.
PROBE_SCRIPT = r"""
clean() {
  awk 'NF {printf "%s%s", sep, $0; sep = "; "}' | tr -cd ' -~' | tr -d '"\\' | cut -c 1-300
}
out=$(wget -S -q -T 5 --no-check-certificate -O /dev/null \
  "https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}/healthz" 2>&1)
status=$(printf '%s\n' "$out" | sed -n 's|.*HTTP/[0-9.]* \([1-5][0-9][0-9]\).*|\1|p' | tail -n 1)
error=
if [ -z "$status" ]; then
  error=$(printf '%s\n' "$out" | clean)
  [ -n "$error" ] || error="wget printed nothing"
fi
ok=true
[ -n "$status" ] || ok=false
dns=
if [ -n "${PROBE_DNS_NAME:-}" ]; then
  addresses() {
    printf '%s\n' "$1" | awk '/^Name:/ {named = 1; next}
      named && /^Address/ {sub(/^Address[^:]*:[ \t]*/, ""); split($0, a, " ");
        printf "%s\"%s\"", sep, a[1]; sep = ","}'
  }
  asked=$PROBE_DNS_NAME
  said=$(nslookup "$asked" 2>&1)
  found=$(addresses "$said")
  if [ -z "$found" ]; then
    for domain in $(awk '$1 == "search" {for (i = 2; i <= NF; i++) print $i}' \
        /etc/resolv.conf 2>/dev/null); do
      case "$said" in *"can't find"*) ;; *) break ;; esac
      said=$(nslookup "$PROBE_DNS_NAME.$domain" 2>&1)
      found=$(addresses "$said")
      if [ -n "$found" ]; then asked=$PROBE_DNS_NAME.$domain; break; fi
    done
  fi
  dns_error=
  if [ -z "$found" ]; then
    ok=false
    dns_error=$(printf '%s\n' "$said" | sed '/^Server:/d; /^Address:/d' | clean)
    [ -n "$dns_error" ] || dns_error="nslookup printed nothing"
  fi
  dns=$(printf ',"dns":{"name":"%s","addresses":[%s],"error":"%s"}' \
    "$asked" "$found" "$dns_error")
fi
peers=
for peer in $(echo "${PROBE_PEERS:-}" | tr ',' ' '); do
  reached=false
  wget -q -T 3 -O /dev/null "http://$peer:${PROBE_PEER_PORT:-8080}/hostname" >/dev/null 2>&1 \
    && reached=true
  [ "$reached" = true ] || ok=false
  peers="${peers:+$peers,}\"$peer\":$reached"
done
printf '{"podIP":"%s","node":"%s","apiServer":{"status":%s,"error":"%s"}%s,"peers":{%s}}' \
  "$POD_IP" "$NODE_NAME" "${status:-null}" "$error" "$dns" "$peers" \
  > "${PROBE_REPORT:-/dev/termination-log}"
[ "$ok" = true ]
""".lstrip("\n")


@dataclass(frozen=True)
class Peer:
    ip: str
    pod: str  # namespace/name
    node: str


@dataclass
class Probe:
    """What the probe reported, and the peers it was given."""

    request: VerifyInput
    peers: dict[str, Peer | None]  # "flannel" / "cilium" -> the peer probed, if any
    pod_ip: str | None = None
    api_status: int | None = None  # the HTTP status /healthz answered with; None: no answer
    api_error: str = ""  # why nothing answered, as wget said it
    dns: DnsAnswer | None = None  # None: the probe made no lookup
    reached: dict[str, bool] = field(default_factory=dict)
    problem: str = ""  # why there is no report, when there is none


# ---- checks: one small function each, registered by name ----------------------------------

def _passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, outcome="passed", detail=detail)


def _failed(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, outcome="failed", detail=detail)


def _ip_in_pool(probe: Probe) -> CheckResult:
    expect = probe.request.expect
    ranges = overlay_ranges(probe.request.overlays).get(expect, [])
    name = "pod-ip-in-pool"
    if probe.pod_ip is None:
        return _failed(name, f"the probe got no IP ({probe.problem or 'no report'})")
    if not ranges:
        return _failed(name, "no flannel network to compare with")
    inside = range_of(probe.pod_ip, ranges)
    if inside:
        return _passed(name, f"{probe.pod_ip} is in {inside}")
    return _failed(name, f"{probe.pod_ip} is outside the {expect} range {', '.join(ranges)}")


def _api_server(probe: Probe) -> CheckResult:
    """Reachable is what counts: any HTTP answer passes, as `curl -sk` would. 401 and 403
    come from API servers that refuse anonymous requests, and they still answered."""
    name = "api-server"
    if probe.problem:
        return _failed(name, probe.problem)
    if probe.api_status is None:
        return _failed(name, f"/healthz did not answer: {probe.api_error or 'no reason given'}")
    detail = f"/healthz answered HTTP {probe.api_status}"
    if probe.api_status in (401, 403):
        detail += " (reachable; anonymous requests are refused)"
    return _passed(name, detail)


def _dns(probe: Probe) -> CheckResult:
    name = "dns"
    if probe.problem:
        return _failed(name, probe.problem)
    if probe.dns is None:
        return _failed(name, "the probe made no DNS lookup")
    if probe.dns.addresses:
        return _passed(name, f"{probe.dns.name} resolved to {', '.join(probe.dns.addresses)}")
    return _failed(name, f"{DNS_NAME} did not resolve: {probe.dns.error or 'no reason given'}")


def _peer(overlay: str) -> Callable[[Probe], CheckResult]:
    def check(probe: Probe) -> CheckResult:
        name, peer = f"peer-{overlay}", probe.peers.get(overlay)
        if peer is None:
            why = (f"no Ready echo pod on {overlay} nodes yet"
                   if probe.request.policy.echo_namespace else "no echo mesh in this run")
            return CheckResult(name=name, outcome="not-checked", detail=why)
        where = f"http://{peer.ip}:{ECHO_PORT}/hostname ({peer.pod} on {peer.node})"
        if probe.problem:
            return _failed(name, f"{where}: {probe.problem}")
        if probe.reached.get(peer.ip, False):
            return _passed(name, f"{where} answered")
        return _failed(name, f"{where} did not answer")
    return check


CHECKS: dict[str, Callable[[Probe], CheckResult]] = {
    "pod-ip-in-pool": _ip_in_pool,
    "api-server": _api_server,
    "dns": _dns,
    "peer-flannel": _peer("flannel"),
    "peer-cilium": _peer("cilium"),
}

# Failures that a moment can cure: reachability, while a rebooted node's routes converge.
CONVERGING = frozenset({"api-server", "dns", "peer-flannel", "peer-cilium"})
DNS_NAME = "kubernetes.default"
ECHO_PAGE = 100  # echo pods read at a time while looking for peers
PROBE_PAUSE_SECONDS = 2.0
clock, pause = time.monotonic, time.sleep  # module attributes, so unit tests can stand in


def judge(probe: Probe, checks: Sequence[str]) -> list[CheckResult]:
    """The named checks' verdicts on the probe, in the order asked. A name without a check
    (the spec's list of names grew, this table did not) fails rather than passing unseen."""
    return [CHECKS[name](probe) if name in CHECKS
            else _failed(name, f"unknown check; known: {sorted(CHECKS)}") for name in checks]


# ---- the step -----------------------------------------------------------------------------

def verify_node(kube: Kube, request: VerifyInput) -> VerifyResult:
    """Probes the node until every check passes or the verify deadline comes. Right after a
    reboot the node's routes are still converging (flanneld is re-programming `flannel.1`, a
    peer's agent is starting), so a probe that could not reach the API server or a peer is
    repeated; a wrong pod address, or a probe that wrote no report, is final at once."""
    node, timeout = request.target.node, request.policy.timeout_seconds
    deadline = clock() + timeout
    attempt = 0
    while True:
        attempt += 1
        probe = _probe_once(kube, request, max(deadline - clock(), 1.0))
        checks = judge(probe, request.policy.checks)
        failed = [c for c in checks if c.failed]
        if (not failed or probe.problem or any(c.name not in CONVERGING for c in failed)
                or clock() + PROBE_PAUSE_SECONDS >= deadline):
            break
        heartbeat(probe_attempt=attempt, failed=[c.name for c in failed])
        pause(PROBE_PAUSE_SECONDS)
    result = VerifyResult(pod_ip=probe.pod_ip, checks=checks)
    not_checked = "".join(f"; not checked: {c.name} ({c.detail})" for c in checks
                          if c.outcome == "not-checked")
    if not result.passed:
        get_node(kube, node)  # a node that went away is told apart from a failed check
        said = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        tries = f" ({attempt} probes in {timeout:.0f}s)" if attempt > 1 else ""
        record_node_event(kube, node, "CiliumMigrateVerifyFailed",
                          f"verification failed{tries}: {said}{not_checked}", type="Warning")
        raise step_error(StepError.VERIFICATION_FAILED,
                         f"verification of {node} failed{tries}: {said}",
                         result.model_dump(mode="json"))
    # The event that says the node is done: on Cilium, or back on flannel after a rollback.
    record_node_event(kube, node, "CiliumMigrateVerified",
                      f"verified ({request.expect}): pod IP {probe.pod_ip}; checks passed: "
                      f"{', '.join(c.name for c in checks if c.passed)}{not_checked}")
    return result


def _probe_once(kube: Kube, request: VerifyInput, timeout: float) -> Probe:
    """One probe pod on the node, against peers chosen now; its report."""
    node = request.target.node
    peers, runs_echo = _find_peers(kube, request)
    if not runs_echo:
        get_node(kube, node)  # not even the echo mesh runs there: is the node still there?
    pods = f"/api/v1/namespaces/{request.namespace}/pods"
    name = pod_name("probe", node)
    dns = DNS_NAME if "dns" in request.policy.checks else None
    wanted = probe_pod(name, node, request.policy.image, peers, dns)
    created = kube.create(pods, wanted)
    if created is None:
        # An earlier attempt's probe, which may have probed other peers: start afresh.
        kube.delete(f"{pods}/{name}", {"gracePeriodSeconds": 0})
        if not kube.wait(pods, lambda found: not found, timeout,
                         fieldSelector=f"metadata.name={name}"):
            raise RuntimeError(f"the previous probe {request.namespace}/{name} is still there")
        created = kube.create(pods, wanted)
        if created is None:
            raise RuntimeError(f"another probe {request.namespace}/{name} was just created")
    # Followed from the created object: the watch needs no list to start.
    probe_pods = kube.follow(pods, {"fieldSelector": f"metadata.name={name}"},
                             objects=[created],
                             resource_version=created["metadata"]["resourceVersion"])
    try:
        finished = probe_pods.wait(lambda found: next((p for p in found if pod_finished(p)), None),
                                   timeout, on_tick=lambda: heartbeat(probe=name))
        last = finished or next(iter(probe_pods.objects), None)  # as the watch last saw it
    finally:
        kube.delete(f"{pods}/{name}", {"gracePeriodSeconds": 0})
    return read_report(request, peers, finished, last)


def _find_peers(kube: Kube, request: VerifyInput) -> tuple[dict[str, Peer | None], bool]:
    """A peer per overlay among the echo mesh's running pods (only they serve the peer checks'
    requests), and whether an echo pod runs on the node itself.

    The peers an earlier verify chose are asked for first, by name (`_REMEMBERED`); only an
    overlay without a usable one is looked for, a page of echo pods at a time until each
    overlay has one. A wave's fifty verifies would otherwise each read the mesh's pods, all
    of them while one overlay's are still few (at 300 nodes, py-spy put a fifth of the worker's
    time in reading them)."""
    found: dict[str, Peer | None] = {"flannel": None, "cilium": None}
    namespace = request.policy.echo_namespace
    if namespace is None:
        return found, False
    path = f"/api/v1/namespaces/{namespace}/pods"
    node = request.target.node
    runs_echo = bool(kube.get(path, labelSelector=ECHO_SELECTOR,
                              fieldSelector=f"spec.nodeName={node},status.phase=Running")["items"])
    with _REMEMBERED_LOCK:
        remembered = _REMEMBERED.setdefault(kube, {})
    for overlay in found:
        name = remembered.get((namespace, overlay))
        pod = kube.get_or_none(f"{path}/{name}") if name else None
        if pod is not None and pod.get("status", {}).get("phase") == "Running":
            found[overlay] = peers_among([pod], request)[overlay]
    if all(found.values()):
        return found, runs_echo
    for items in kube.pages(path, ECHO_PAGE, labelSelector=ECHO_SELECTOR,
                            fieldSelector="status.phase=Running"):
        for overlay, peer in peers_among(items, request).items():
            found[overlay] = found[overlay] or peer
        if all(found.values()):
            break
    for overlay, peer in found.items():
        if peer is not None:
            remembered[(namespace, overlay)] = peer.pod.split("/", 1)[1]
    return found, runs_echo


# The peers each cluster's verifies last chose, by (mesh namespace, overlay): the pod's name.
# Per API client, which the worker keeps one of per cluster (`ActivityContext.kube`).
_REMEMBERED: weakref.WeakKeyDictionary[Kube, dict[tuple[str, str], str]] = (
    weakref.WeakKeyDictionary())
_REMEMBERED_LOCK = threading.Lock()


def peers_among(running: list[Obj], request: VerifyInput) -> dict[str, Peer | None]:
    """One Ready echo pod per overlay among ``running``, on another node, the same one each
    time the cluster is alike (sorted by node, namespace and name)."""
    ranges = overlay_ranges(request.overlays)
    candidates = sorted(
        (Peer(ip=p["status"]["podIP"], pod=object_key(p), node=p["spec"]["nodeName"])
         for p in running if _usable_peer(p, request.target.node)),
        key=lambda peer: (peer.node, peer.pod))
    return {overlay: next((peer for peer in candidates
                           if range_of(peer.ip, ranges.get(overlay, [])) is not None), None)
            for overlay in ("flannel", "cilium")}


def _usable_peer(pod: Obj, node: str) -> bool:
    """A Ready echo pod with an address, on a pod network, on another node. (Probe pods are
    never among them: the echo mesh's label selects the list.)"""
    spec = pod["spec"]
    return (pod_ready(pod) and bool(pod["status"].get("podIP")) and not spec.get("hostNetwork")
            and spec.get("nodeName") != node)


def probe_pod(name: str, node: str, image: str, peers: dict[str, Peer | None],
              dns_name: str | None = DNS_NAME) -> Obj:
    def field_env(variable: str, path: str) -> Obj:
        return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {PROBE_LABEL: "true", **MANAGED_BY}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "probe", "image": image, "command": ["sh", "-c", PROBE_SCRIPT],
                "env": [{"name": "PROBE_PEERS",
                         "value": ",".join(p.ip for p in peers.values() if p)},
                        {"name": "PROBE_PEER_PORT", "value": str(ECHO_PORT)},
                        {"name": "PROBE_DNS_NAME", "value": dns_name or ""},
                        {"name": "PROBE_REPORT", "value": REPORT_PATH},
                        field_env("POD_IP", "status.podIP"),
                        field_env("NODE_NAME", "spec.nodeName")],
                "terminationMessagePath": REPORT_PATH,
            }],
        },
    }


def read_report(request: VerifyInput, peers: dict[str, Peer | None], finished: Obj | None,
                last: Obj | None) -> Probe:
    """The probe as its pod left it: ``finished`` once it ended (None if it did not), ``last``
    as last seen (for its address, even when it did not finish)."""
    probe = Probe(request=request, peers=peers,
                  pod_ip=((last or {}).get("status") or {}).get("podIP"))
    if finished is None:
        phase = ((last or {}).get("status") or {}).get("phase", "gone")
        probe.problem = (f"the probe did not finish within "
                         f"{request.policy.timeout_seconds:.0f}s (pod {phase})")
        return probe
    _, message = termination(finished)
    try:
        report = ProbeReport.model_validate_json(message)
    except ValidationError:
        probe.problem = f"the probe wrote no report: {message.strip()[:200] or 'empty'}"
        return probe
    probe.pod_ip = report.pod_ip or probe.pod_ip
    probe.api_status = report.api_server.status
    probe.api_error = report.api_server.error
    probe.dns = report.dns
    probe.reached = dict(report.peers)
    return probe
