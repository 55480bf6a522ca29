"""How long a rehearsal of a 100-node cluster takes on this machine.

    PYTHONPATH=. .venv/bin/python bench/rehearsal_bench.py [--nodes 100] [--zones 3]
        [--max-unavailable 10%] [--dir DIR] [--deadline SECONDS]

Writes a snapshot of a made-up cluster of ``--nodes`` nodes (3 control planes, workers spread
over the zones, 20 Deployments of 6 replicas each with a PDB allowing one disruption, a
StatefulSet of 3 behind minAvailable 2), then runs `cilium-migrate rehearse --snapshot` on it
and prints the wall time, the time the rehearsed run took in the copy, the waves and the
verdict. Figures, not assertions. The rehearsal stops its sandbox and server itself, also on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plan.duration import format_duration  # noqa: E402
from plan.facts import Taint  # noqa: E402
from plan.snapshot import (  # noqa: E402
    ClusterSnapshot,
    ContainerShape,
    NamespaceShape,
    NodeShape,
    PodDisruptionBudgetShape,
    PodShape,
    WorkloadShape,
    dump_snapshot,
)
from plan.spec import DEFAULT_CILIUM_VERSION  # noqa: E402
from sandbox.cilium_release import release_path  # noqa: E402

ZONE = "topology.kubernetes.io/zone"
SIZE = {"cpu": "8", "memory": "32Gi", "pods": "110"}


def made_up_cluster(nodes: int, zones: int) -> ClusterSnapshot:
    control_planes = 3
    shapes = []
    for index in range(nodes):
        cp = index < control_planes
        zone = f"zone-{chr(ord('a') + index % zones)}"
        name = f"cp-{index + 1}" if cp else f"worker-{index - control_planes + 1}"
        shapes.append(NodeShape(
            name=name, control_plane=cp, zone=zone, labels={ZONE: zone},
            taints=[Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")]
            if cp else [],
            capacity=SIZE, allocatable=SIZE))
    workloads, pdbs = [], []
    for number in range(20):
        name = f"app-{number}"
        workloads.append(WorkloadShape(
            kind="Deployment", namespace="apps", name=name, replicas=6,
            selector={"matchLabels": {"app": name}},
            pod=PodShape(labels={"app": name}, termination_grace_period_seconds=30,
                         containers=[ContainerShape(name="app", requests={"cpu": "200m"})])))
        pdbs.append(PodDisruptionBudgetShape(namespace="apps", name=name,
                                             selector={"matchLabels": {"app": name}},
                                             max_unavailable=1))
    workloads.append(WorkloadShape(
        kind="StatefulSet", namespace="apps", name="db", replicas=3,
        selector={"matchLabels": {"app": "db"}},
        pod=PodShape(labels={"app": "db"}, termination_grace_period_seconds=60,
                     containers=[ContainerShape(name="db", requests={"cpu": "1"})])))
    pdbs.append(PodDisruptionBudgetShape(namespace="apps", name="db",
                                         selector={"matchLabels": {"app": "db"}},
                                         min_available=2))
    return ClusterSnapshot(cluster="bench", taken_at=datetime.now(UTC), nodes=shapes,
                           namespaces=[NamespaceShape(name="apps")], workloads=workloads,
                           pdbs=pdbs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--max-unavailable", default="10%")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--deadline", type=float, default=3 * 3600.0, metavar="SECONDS",
                        help="interrupt the rehearsal (it stops what it started) after this")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-rehearsal-"))
    directory.mkdir(parents=True, exist_ok=True)
    snapshot = directory / "snapshot.yaml"
    snapshot.write_text(dump_snapshot(made_up_cluster(args.nodes, args.zones), "yaml"))
    spec = directory / "migration.yaml"
    spec.write_text(yaml.safe_dump({
        "cluster": {"name": "bench"},
        "cilium": {"chart": {"path": str(release_path(DEFAULT_CILIUM_VERSION).chart_dir)}},
        "rollout": {"maxUnavailable": args.max_unavailable},
        "approvals": {"policy": "per-wave"},
        "drain": {"timeout": "2m"},
    }))
    print(f"snapshot of {args.nodes} nodes: {snapshot.stat().st_size / 1024:.0f} kB "
          f"({snapshot})", flush=True)
    started = time.monotonic()
    rehearsal = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "rehearse", "-f", str(spec), "--snapshot",
         str(snapshot), "--dir", str(directory / "run"), "--port", "7292",
         "--reboot-duration", "180", "-o", "json"], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = rehearsal.communicate(timeout=args.deadline)
    except subprocess.TimeoutExpired:
        print(f"past the deadline ({args.deadline:.0f}s): interrupting the rehearsal")
        rehearsal.send_signal(signal.SIGINT)  # it stops its sandbox and server on the way out
        out, _ = rehearsal.communicate()
    wall = time.monotonic() - started
    print(f"rehearsal of {args.nodes} nodes: {wall:.0f}s wall time (exit {rehearsal.returncode})")
    if not out.strip():
        return
    report = json.loads(out)
    print(f"verdict {report['verdict']}, run ended {report['phase']}, "
          f"{len(report['waves'])} waves, {len(report['blockers'])} blockers")
    print(f"in the copy {_readable(report['measured_total'])}, predicted for the cluster "
          f"{_readable(report['predicted_total'])}")


def _readable(iso_duration: str) -> str:
    """The report's ISO 8601 duration (PT7M4.5S) as the CLI shows durations (7m 4s)."""
    return format_duration(TypeAdapter(timedelta).validate_python(iso_duration))


if __name__ == "__main__":
    main()
