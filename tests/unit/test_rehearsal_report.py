"""The rehearsal's report: waves with measured and predicted times, every blocker met with the
object that stood in the way, and the go/no-go that follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plan.contract import DrainBlocker
from plan.findings import Finding
from plan.rehearsal import NodeRun, Timing, UnplacedPod, WaveKind, rehearsal_report
from plan.snapshot import ClusterSnapshot, NodeShape, PodShape, WorkloadShape

T0 = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
TIMING = Timing(sandbox_reboot=timedelta(seconds=2), reboot=timedelta(minutes=3))


def snapshot(zone_of_one: bool = False) -> ClusterSnapshot:
    nodes = [NodeShape(name="cp-1", control_plane=True, zone="a"),
             NodeShape(name="w-1", zone="a"), NodeShape(name="w-2", zone="a"),
             NodeShape(name="w-3", zone="b"), NodeShape(name="w-4", zone="b"),
             NodeShape(name="w-6", zone="b")]  # a wave of two leaves zone b a node
    if zone_of_one:
        nodes.append(NodeShape(name="w-5", zone="c"))
    return ClusterSnapshot(cluster="prod-eu", taken_at=T0, nodes=nodes, workloads=[
        WorkloadShape(kind="Deployment", namespace="shop", name="web", replicas=3,
                      pod=PodShape(termination_grace_period_seconds=45)),
        WorkloadShape(kind="DaemonSet", namespace="ops", name="agent",
                      pod=PodShape(termination_grace_period_seconds=600))])


def ran(name: str, wave: int, start_s: int, end_s: int, state: str = "migrated",
        **extra: object) -> NodeRun:
    return NodeRun.model_validate({
        "name": name, "wave": wave, "state": state, "started_at": T0 + timedelta(seconds=start_s),
        "finished_at": T0 + timedelta(seconds=end_s), "verify": [], **extra})


WAVES = [WaveKind(index=1, kind="canary", zone="a"), WaveKind(index=2, kind="workers", zone="a"),
         WaveKind(index=3, kind="workers", zone="b"),
         WaveKind(index=4, kind="control-plane", zone="a")]


def test_a_clean_run_is_a_go_with_times_corrected_for_reboots_and_grace_periods() -> None:
    nodes = [ran("w-1", 1, 0, 20), ran("w-2", 2, 30, 50), ran("w-3", 3, 60, 75),
             ran("w-4", 3, 62, 80), ran("cp-1", 4, 90, 110)]
    report = rehearsal_report(snapshot(), WAVES, nodes, [], "completed", None,
                              timedelta(seconds=150), TIMING, [])
    assert report.verdict == "go" and report.reasons == [] and report.blockers == []
    wave3 = report.waves[2]
    assert wave3.nodes == ["w-3", "w-4"] and wave3.states == {"migrated": 2}
    assert wave3.measured == timedelta(seconds=20)
    # +178 s for the cluster's 3 min reboot instead of 2 s, +45 s for web's grace period (the
    # DaemonSet's pods are not evicted, so their 600 s do not count).
    assert wave3.predicted == timedelta(seconds=20 + 178 + 45)
    assert report.predicted_total == timedelta(seconds=150) + 4 * timedelta(seconds=223)


def test_a_pdb_that_blocks_a_drain_and_a_zone_of_one_node_are_both_reported_as_no_go() -> None:
    blocked = ran("w-5", 4, 100, 130, state="skipped", blocker="drain blocked", blockers=[
        DrainBlocker(pod="shop/db-0", reason="eviction refused by PDB shop/db-pdb "
                     "(needs 2 healthy, has 2)", pdb="shop/db-pdb").model_dump()])
    waves = [*WAVES[:3], WaveKind(index=4, kind="workers", zone="c")]
    nodes = [ran("w-1", 1, 0, 20), ran("w-2", 2, 30, 50), ran("w-3", 3, 60, 75),
             ran("w-4", 3, 62, 80), blocked, ran("cp-1", 5, 0, 0, state="pending")]
    unplaced = [UnplacedPod(pod="shop/zonal-0", message="0/6 nodes are available", wave=4),
                UnplacedPod(pod="shop/zonal-0", message="0/6 nodes are available", wave=4)]
    report = rehearsal_report(snapshot(zone_of_one=True), waves, nodes, unplaced, "cancelled",
                              None, None, TIMING, ["a note"])
    assert report.verdict == "no-go"
    assert [(b.kind, b.wave, b.node, b.object) for b in report.blockers] == [
        ("pdb", 4, "w-5", "shop/db-pdb"),
        ("unschedulable", 4, None, "shop/zonal-0"),
        ("zone-emptied", 4, None, "c")]
    assert "pod shop/db-0 eviction refused by PDB shop/db-pdb" in report.blockers[0].message
    assert report.reasons[-1] == "the rehearsed run ended cancelled"
    assert report.predicted_total is None and report.notes == ["a note"]


def test_a_wave_that_takes_a_whole_zone_is_found_and_cordoned_nodes_give_no_room() -> None:
    taken = snapshot()
    nodes = [n.model_copy(update={"schedulable": n.name != "w-6"}) for n in taken.nodes]
    taken = taken.model_copy(update={"nodes": nodes})
    report = rehearsal_report(taken, WAVES, [ran("w-3", 3, 0, 10), ran("w-4", 3, 0, 10)], [],
                              "completed", None,
                              None, TIMING, [])
    assert [(b.kind, b.object, b.wave) for b in report.blockers] == [("zone-emptied", "b", 3)]


def test_a_node_that_failed_without_a_drain_blocker_is_reported_with_its_error() -> None:
    failed = ran("w-1", 1, 0, 10, state="failed", error="probe failed: no route to peer")
    report = rehearsal_report(snapshot(), WAVES[:1], [failed], [], "failed", "wave 1 failed",
                              None, TIMING, [])
    assert [(b.kind, b.node, b.message) for b in report.blockers] == [
        ("node", "w-1", "w-1 ended failed: probe failed: no route to peer")]
    assert report.reasons[-1] == "the rehearsed run ended failed: wave 1 failed"


def test_preflights_blocking_findings_are_blockers_naming_their_object() -> None:
    findings = [Finding(id="pdb-never-allows-eviction", severity="blocking", remedy="relax it",
                        message="PodDisruptionBudget shop/db-pdb needs 2 healthy of 2 pods",
                        subject="shop/db-pdb"),
                Finding(id="pdb-allows-no-disruption-now", severity="warning", remedy="wait",
                        message="another", subject="shop/web-pdb")]
    report = rehearsal_report(snapshot(), [], [], [], "failed", "PreflightBlocked", None,
                              TIMING, [], findings)
    assert [(b.kind, b.object) for b in report.blockers] == [("preflight", "shop/db-pdb")]
    assert report.blockers[0].message.startswith("[pdb-never-allows-eviction] ")
    assert report.verdict == "no-go"
