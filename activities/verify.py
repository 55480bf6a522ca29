"""Verify a node from the inside: a short-lived probe pod pinned to it reports what a workload
there would see, and each requested check judges one part of that report.

The probe is a busybox shell script, so the same pod works on any cluster: it asks the API
server's /healthz, pings one pod on a flannel node and one on a Cilium node (crossing the
overlays is the point of the dual-overlay migration), and writes its findings as JSON to its
termination message. The activity reads the pod's status, so it needs no log access.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from activities.context import get_node, heartbeat, record_node_event, step_error
from activities.host import pod_name, termination
from activities.kubeapi import Kube, Obj, object_key, pod_finished, pod_ready
from activities.pod_addresses import range_of
from plan.contract import PROBE_LABEL, CheckResult, StepError, VerifyInput, VerifyResult
from plan.policies import Overlays

PROBE_SCRIPT = """\
api=false
wget -q -T 5 --no-check-certificate -O /dev/null \\
  "https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}/healthz" && api=true
ok=$api
peers=
for peer in $(echo "${PROBE_PEERS:-}" | tr ',' ' '); do
  reached=false
  ping -c 1 -W 3 "$peer" >/dev/null 2>&1 && reached=true
  [ "$reached" = true ] || ok=false
  peers="${peers:+$peers,}\\"$peer\\":$reached"
done
printf '{"podIP":"%s","node":"%s","apiServer":%s,"peers":{%s}}' \\
  "$POD_IP" "$NODE_NAME" "$api" "$peers" > /dev/termination-log
[ "$ok" = true ]
"""


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
    api_server: bool = False
    reached: dict[str, bool] = field(default_factory=dict)
    problem: str = ""  # why there is no report, when there is none


# ---- checks: one small function each, registered by name ----------------------------------

def _ip_in_pool(probe: Probe) -> CheckResult:
    expect = probe.request.expect
    ranges = _ranges(probe.request.overlays).get(expect, [])
    name = "pod-ip-in-pool"
    if probe.pod_ip is None:
        return CheckResult(name=name, passed=False,
                           detail=f"the probe got no IP ({probe.problem or 'no report'})")
    if not ranges:
        return CheckResult(name=name, passed=False, detail="no flannel network to compare with")
    inside = range_of(probe.pod_ip, ranges)
    if inside:
        return CheckResult(name=name, passed=True, detail=f"{probe.pod_ip} is in {inside}")
    return CheckResult(name=name, passed=False, detail=(
        f"{probe.pod_ip} is outside the {expect} range {', '.join(ranges)}"))


def _api_server(probe: Probe) -> CheckResult:
    if probe.problem:
        return CheckResult(name="api-server", passed=False, detail=probe.problem)
    return CheckResult(name="api-server", passed=probe.api_server,
                       detail="/healthz answered" if probe.api_server
                       else "/healthz did not answer")


def _peer(overlay: str) -> Callable[[Probe], CheckResult]:
    def check(probe: Probe) -> CheckResult:
        name, peer = f"peer-{overlay}", probe.peers.get(overlay)
        if peer is None:
            return CheckResult(name=name, passed=True,
                               detail=f"no peer on {overlay} nodes yet")
        where = f"{peer.ip} ({peer.pod} on {peer.node})"
        if probe.problem:
            return CheckResult(name=name, passed=False, detail=f"{where}: {probe.problem}")
        reached = probe.reached.get(peer.ip, False)
        return CheckResult(name=name, passed=reached,
                           detail=f"{'reached' if reached else 'did not reach'} {where}")
    return check


CHECKS: dict[str, Callable[[Probe], CheckResult]] = {
    "pod-ip-in-pool": _ip_in_pool,
    "api-server": _api_server,
    "peer-flannel": _peer("flannel"),
    "peer-cilium": _peer("cilium"),
}


def judge(probe: Probe, checks: Sequence[str]) -> list[CheckResult]:
    """The named checks' verdicts on the probe, in the order asked. A name without a check
    (the spec's list of names grew, this table did not) fails rather than passing unseen."""
    return [CHECKS[name](probe) if name in CHECKS else CheckResult(
        name=name, passed=False, detail=f"unknown check; known: {sorted(CHECKS)}")
        for name in checks]


# ---- the step -----------------------------------------------------------------------------

def verify_node(kube: Kube, request: VerifyInput) -> VerifyResult:
    node, timeout = request.target.node, request.policy.timeout_seconds
    get_node(kube, node)
    peers = choose_peers(kube, request)
    pods = f"/api/v1/namespaces/{request.namespace}/pods"
    name = pod_name("probe", node)
    # An earlier attempt's probe may have probed other peers: always start afresh.
    kube.delete(f"{pods}/{name}", {"gracePeriodSeconds": 0})
    if not kube.wait(pods, lambda found: not found, timeout,
                     fieldSelector=f"metadata.name={name}"):
        raise RuntimeError(f"the previous probe {request.namespace}/{name} is still there")
    kube.create(pods, probe_pod(name, node, request.policy.image, peers))
    try:
        finished = kube.wait(pods, lambda found: next((p for p in found if pod_finished(p)), None),
                             timeout, on_tick=lambda: heartbeat(probe=name),
                             fieldSelector=f"metadata.name={name}")
        last = finished or kube.get_or_none(f"{pods}/{name}")
    finally:
        kube.delete(f"{pods}/{name}", {"gracePeriodSeconds": 0})
    probe = read_report(request, peers, finished, last)

    checks = judge(probe, request.policy.checks)
    result = VerifyResult(pod_ip=probe.pod_ip, checks=checks)
    if not result.passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed)
        record_node_event(kube, node, "CiliumMigrateVerifyFailed",
                          f"verification failed: {failed}", type="Warning")
        raise step_error(StepError.VERIFICATION_FAILED,
                         f"verification of {node} failed: {failed}", result.model_dump(mode="json"))
    record_node_event(kube, node, "CiliumMigrateVerified",
                      f"verified ({request.expect}): pod IP {probe.pod_ip}; checks passed: "
                      f"{', '.join(c.name for c in checks)}")
    return result


def choose_peers(kube: Kube, request: VerifyInput) -> dict[str, Peer | None]:
    """One Ready pod per overlay, on another node, the same one each time the cluster is alike
    (sorted by node, namespace and name)."""
    ranges = _ranges(request.overlays)
    candidates = sorted(
        (Peer(ip=p["status"]["podIP"], pod=object_key(p), node=p["spec"]["nodeName"])
         for p in kube.get("/api/v1/pods", fieldSelector="status.phase=Running")["items"]
         if _usable_peer(p, request.target.node)),
        key=lambda peer: (peer.node, peer.pod))
    return {overlay: next((peer for peer in candidates
                           if range_of(peer.ip, ranges.get(overlay, [])) is not None), None)
            for overlay in ("flannel", "cilium")}


def _ranges(overlays: Overlays) -> dict[str, list[str]]:
    """Each overlay's pod address ranges; flannel has none when discovery found no network."""
    ranges = {"cilium": overlays.cilium_pools}
    if overlays.flannel_network:
        ranges["flannel"] = [overlays.flannel_network]
    return ranges


def _usable_peer(pod: Obj, node: str) -> bool:
    spec, labels = pod["spec"], pod["metadata"].get("labels") or {}
    return (pod_ready(pod) and bool(pod["status"].get("podIP")) and not spec.get("hostNetwork")
            and spec.get("nodeName") != node and labels.get(PROBE_LABEL) != "true")


def probe_pod(name: str, node: str, image: str, peers: dict[str, Peer | None]) -> Obj:
    def field_env(variable: str, path: str) -> Obj:
        return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {PROBE_LABEL: "true",
                                              "app.kubernetes.io/managed-by": "cilium-migrate"}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "probe", "image": image, "command": ["sh", "-c", PROBE_SCRIPT],
                "env": [{"name": "PROBE_PEERS",
                         "value": ",".join(p.ip for p in peers.values() if p)},
                        field_env("POD_IP", "status.podIP"),
                        field_env("NODE_NAME", "spec.nodeName")],
                "securityContext": {"capabilities": {"add": ["NET_RAW"]}},  # ping
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
        report: dict[str, Any] = json.loads(message)
    except ValueError:
        probe.problem = f"the probe wrote no report: {message.strip()[:200] or 'empty'}"
        return probe
    probe.pod_ip = report.get("podIP") or probe.pod_ip
    probe.api_server = report.get("apiServer") is True
    probe.reached = {str(ip): ok is True for ip, ok in (report.get("peers") or {}).items()}
    return probe
