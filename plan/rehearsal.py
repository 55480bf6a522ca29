"""What a rehearsal found: the waves as they ran, every blocker met, the predicted time, go/no-go.

Pure decisions over what the rehearsal observed (`client/rehearse_commands.py` gathers it):
node records as `status --nodes all -o json` prints them, the waves' kinds and zones, pods the
copy's scheduler could not place while nodes were out, and the snapshot.

The prediction starts from the time each wave took in the copy and corrects the two things the
copy does faster than the cluster: a simulated reboot (replaced by the duration the operator
gives) and pods' shutdown (containers in the copy exit at once; a drain in the cluster may wait
for the longest `terminationGracePeriodSeconds` of the pods it evicts, so that is added per
wave, as the worst case). Time waiting for approvals is not in it: people decide that.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from plan.contract import DrainBlocker
from plan.findings import Finding, blocking
from plan.snapshot import ClusterSnapshot

APPROVER = "rehearsal"  # who the rehearsal's auto-granted approvals name
BlockerKind = Literal["preflight", "pdb", "drain", "unschedulable", "zone-emptied", "node"]


class NodeRun(BaseModel):
    """One node's record from the run (a `NodeProgress` as JSON; other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    wave: int
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    blocker: str | None = None
    blockers: list[DrainBlocker] = Field(default_factory=list)
    error: str | None = None


class WaveKind(BaseModel):
    index: int
    kind: str
    zone: str | None = None


class UnplacedPod(BaseModel):
    """A pod the scheduler of the copy could not place while wave ``wave`` ran."""

    pod: str  # namespace/name
    message: str
    wave: int | None = None


class BlockerMet(BaseModel):
    kind: BlockerKind
    wave: int | None = None
    node: str | None = None
    object: str | None = None  # the PDB, pod or zone that stood in the way
    message: str


class WaveReport(BaseModel):
    index: int
    kind: str
    zone: str | None = None
    nodes: list[str]
    states: dict[str, int]  # node state -> how many of the wave's nodes ended in it
    measured: timedelta | None = None  # first node's start to last node's end, in the copy
    predicted: timedelta | None = None


class RehearsalReport(BaseModel):
    cluster: str
    snapshot_taken_at: datetime
    nodes: int
    phase: str  # how the rehearsed run ended
    error: str | None = None
    waves: list[WaveReport]
    blockers: list[BlockerMet]
    measured_total: timedelta | None = None
    predicted_total: timedelta | None = None
    verdict: Literal["go", "no-go"]
    reasons: list[str]  # why no-go; empty for a go
    approvals_by: str = APPROVER
    notes: list[str] = Field(default_factory=list)  # where the copy differs from the cluster


class Timing(BaseModel):
    sandbox_reboot: timedelta  # how long a simulated reboot took in the copy
    reboot: timedelta | None = None  # how long one takes in the cluster, if the operator knows


def rehearsal_report(snapshot: ClusterSnapshot, waves: list[WaveKind], nodes: list[NodeRun],
                     unplaced: list[UnplacedPod], phase: str, error: str | None,
                     measured_total: timedelta | None, timing: Timing,
                     notes: list[str], findings: list[Finding] | None = None) -> RehearsalReport:
    by_wave: dict[int, list[NodeRun]] = defaultdict(list)
    for node in nodes:
        by_wave[node.wave].append(node)
    kinds = {w.index: w for w in waves}
    extra = wave_overhead(snapshot, timing)
    reports = []
    for index in sorted(set(by_wave) | set(kinds)):
        members = sorted(by_wave.get(index, []), key=lambda n: n.name)
        measured = _span(members)
        kind = kinds.get(index, WaveKind(index=index, kind="catch-up"))
        states: dict[str, int] = defaultdict(int)
        for node in members:
            states[node.state] += 1
        reports.append(WaveReport(
            index=index, kind=kind.kind, zone=kind.zone, nodes=[n.name for n in members],
            states=dict(states), measured=measured,
            predicted=None if measured is None else measured + extra))
    # Preflight's blocking findings stop the run before any wave: the cluster's own, as is.
    blockers = [BlockerMet(kind="preflight", object=finding.subject,
                           message=f"[{finding.id}] {finding.message}")
                for finding in blocking(findings or [])]
    blockers += (_node_blockers(nodes) + _unplaced_blockers(unplaced)
                 + zones_emptied(snapshot, reports))
    predicted_total = None
    if measured_total is not None:
        predicted_total = measured_total + extra * sum(1 for w in reports if w.measured)
    reasons = [f"{b.kind}: {b.message}" for b in blockers]
    if phase != "completed":
        reasons.append(f"the rehearsed run ended {phase}" + (f": {error}" if error else ""))
    return RehearsalReport(
        cluster=snapshot.cluster, snapshot_taken_at=snapshot.taken_at, nodes=len(snapshot.nodes),
        phase=phase, error=error, waves=reports, blockers=blockers,
        measured_total=measured_total, predicted_total=predicted_total,
        verdict="no-go" if reasons else "go", reasons=reasons, notes=notes)


def wave_overhead(snapshot: ClusterSnapshot, timing: Timing) -> timedelta:
    """What a wave takes longer in the cluster than in the copy: the real reboot instead of
    the simulated one, and the longest grace period of a pod a drain evicts."""
    reboot = (timing.reboot - timing.sandbox_reboot) if timing.reboot else timedelta(0)
    graces = [w.pod.termination_grace_period_seconds
              for w in snapshot.workloads if w.kind != "DaemonSet"]
    # 30 s is the API server's default when a template does not say.
    longest = max((30 if g is None else g for g in graces), default=0)
    return reboot + timedelta(seconds=longest)


def _span(nodes: list[NodeRun]) -> timedelta | None:
    starts = [n.started_at for n in nodes if n.started_at]
    ends = [n.finished_at for n in nodes if n.finished_at]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def _node_blockers(nodes: list[NodeRun]) -> list[BlockerMet]:
    found = []
    for node in sorted(nodes, key=lambda n: (n.wave, n.name)):
        for blocker in node.blockers:
            found.append(BlockerMet(
                kind="pdb" if blocker.pdb else "drain", wave=node.wave, node=node.name,
                object=blocker.pdb or blocker.pod,
                message=f"draining {node.name}: pod {blocker.pod} {blocker.reason}"))
        if not node.blockers and node.state not in ("migrated", "pending", "cancelled"):
            why = node.error or node.blocker or node.state
            found.append(BlockerMet(kind="node", wave=node.wave, node=node.name,
                                    message=f"{node.name} ended {node.state}: {why}"))
    return found


def _unplaced_blockers(unplaced: list[UnplacedPod]) -> list[BlockerMet]:
    seen: dict[str, UnplacedPod] = {}
    for pod in unplaced:
        seen.setdefault(pod.pod, pod)
    return [BlockerMet(kind="unschedulable", wave=pod.wave, object=pod.pod,
                       message=f"pod {pod.pod} could not be rescheduled: {pod.message}")
            for pod in seen.values()]


def zones_emptied(snapshot: ClusterSnapshot, waves: list[WaveReport]) -> list[BlockerMet]:
    """Waves that take every node of a zone out at once (nodes already cordoned in the
    cluster do not count as room): whatever must run in that zone has nowhere to go."""
    zones: dict[str, set[str]] = defaultdict(set)
    for node in snapshot.nodes:
        if node.zone is not None and node.schedulable and not node.control_plane:
            zones[node.zone].add(node.name)
    found = []
    for wave in waves:
        for zone, members in sorted(zones.items()):
            if members and members <= set(wave.nodes):
                found.append(BlockerMet(
                    kind="zone-emptied", wave=wave.index, object=zone,
                    message=f"wave {wave.index} takes every node of zone {zone} out at once "
                            f"({', '.join(sorted(members))})"))
    return found
