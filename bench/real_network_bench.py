"""Figures of the real-network sandbox: how long `sandbox up --network real` takes for 1+3
nodes, what a node costs in memory, and a continuous HTTP mesh during a whole migration.

    PYTHONPATH=. .venv/bin/python bench/real_network_bench.py [--workers 3] [--interval 1]
        [--deadline SECONDS]

The product's own monitor (its echo mesh and `/dial` rounds, `activities.connectivity`)
reports per wave at the end. The bench's mesh, apart from it: an agnhost echo pod on every
node; every ``--interval`` seconds each Ready echo pod asks every other one for its hostname
(agnhost `/dial`, through the API server's pod proxy), and each request is counted under the
period it was sent in (a phase, or the wave being migrated) and the overlays of its two ends.
Figures, not assertions (Linux, root). Whatever ends the run
stops the sandbox and the dev server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.context import ActivityContext  # noqa: E402
from activities.kubeapi import Kube  # noqa: E402
from bench.lifecycle import BenchStopped, Stage, cleaning_up, guard, stop_children  # noqa: E402
from bench.proc import rss_mib  # noqa: E402
from sandbox import cluster  # noqa: E402
from sandbox.cilium_release import ensure_default_release  # noqa: E402
from sandbox.nettools import real_network_unsupported  # noqa: E402
from sandbox.network import netns  # noqa: E402
from sandbox.toolchain import ensure_toolchain  # noqa: E402
from sandbox.topology import CLUSTER_CIDR, Topology  # noqa: E402
from tests.conftest import CILIUM_POOL, local_temporal  # noqa: E402
from tests.integration.migration_support import (  # noqa: E402
    in_process_worker,
    migration_spec,
    progress_of,
    start_migration,
)
from tests.network.real_sandbox import deploy_echo, dial, echo_pods, wait_for_echo  # noqa: E402
from workflows.progress import NodeState, Phase, Progress  # noqa: E402


def overlay(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    if address in ipaddress.ip_network(CILIUM_POOL):
        return "cilium"
    return "flannel" if address in ipaddress.ip_network(CLUSTER_CIDR) else "other"


def period(progress: Progress) -> str:
    """Where the migration is: a phase, or the wave whose nodes are moving."""
    if progress.phase is not Phase.MIGRATING:
        return str(progress.phase)
    moving = [s.wave for s in progress.nodes.values()
              if s.state not in (NodeState.MIGRATED, NodeState.PENDING)]
    return f"wave {min(moving)}" if moving else "between waves"


class Mesh:
    """Every Ready echo pod asks every other, each ordered pair in a loop of its own.

    Each request is made from a fresh view of the pods and nodes: after a reboot a pod has a
    new address, and asking the old one would count the view's age as a network failure. A
    request whose source or target node is cordoned (in maintenance: draining, rebooting) is
    counted apart: DaemonSet pods there go down with their node by design, while the promise
    of zero downtime is about nodes in service.
    """

    def __init__(self, kube: Kube, interval: float) -> None:
        self.kube, self.interval = kube, interval
        self.period = "before"
        self.counts: Counter[tuple[str, str, str, bool]] = Counter()
        self.failures: list[str] = []
        self.periods: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """One loop per ordered pair of nodes, so a request waiting on a peer that went down
        holds up no other pair."""
        nodes = sorted(echo_pods(self.kube))
        for a in nodes:
            for b in nodes:
                if a != b:
                    thread = threading.Thread(target=self._pair, args=(a, b), daemon=True,
                                              name=f"mesh-{a}-{b}")
                    thread.start()
                    self.threads.append(thread)

    def join(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _cordoned(self) -> set[str]:
        return {n["metadata"]["name"] for n in self.kube.get("/api/v1/nodes")["items"]
                if n["spec"].get("unschedulable")}

    def _pair(self, a: str, b: str) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self._request(a, b)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _request(self, a: str, b: str) -> None:
        label = self.period
        pods, cordoned = echo_pods(self.kube), self._cordoned()
        source, target = pods.get(a), pods.get(b)
        if source is None or target is None:
            return  # not Ready now: nothing to ask, or nobody to ask it
        service = "maintenance" if {a, b} & cordoned else "in service"
        kinds = "-".join(sorted((overlay(source["status"]["podIP"]),
                                 overlay(target["status"]["podIP"]))))
        reached = dial(self.kube, source, target["status"]["podIP"]) == [
            target["metadata"]["name"]]
        with self.lock:
            if label not in self.periods:
                self.periods.append(label)
            self.counts[(label, service, kinds, reached)] += 1
            if not reached:
                self.failures.append(f"{label}: {a} -> {b} ({target['status']['podIP']}, "
                                     f"{kinds}, {service})")

    def report(self) -> None:
        print(f"\n{'period':<16} {'nodes':<12} {'pair':<16} {'requests':>9} {'failed':>7}")
        for label in self.periods:
            for service, kinds in sorted({(v, k) for (p, v, k, _) in self.counts
                                          if p == label}):
                ok = self.counts[(label, service, kinds, True)]
                bad = self.counts[(label, service, kinds, False)]
                print(f"{label:<16} {service:<12} {kinds:<16} {ok + bad:>9} {bad:>7}")
        for service in ("in service", "maintenance"):
            total = sum(n for (_, v, _, _), n in self.counts.items() if v == service)
            failed = sum(n for (_, v, _, ok), n in self.counts.items()
                         if v == service and not ok)
            print(f"{'all':<16} {service:<12} {'':<16} {total:>9} {failed:>7}")
        for line in self.failures[:20]:
            print(f"  failed: {line}")


def monitor_report(progress: Progress) -> None:
    """What the product's own connectivity monitor counted in each wave (its echo mesh)."""
    print("\nthe product's connectivity monitor (echo mesh, pod proxy /dial):")
    print(f"{'wave':>4} {'nodes':>5} {'rounds':>6} {'requests':>8} {'failed':>6} "
          f"{'worst window':>12} {'in maint.':>9} {'undelivered':>11}  by kind (requests/failed)")
    for wave in progress.waves:
        f = wave.connectivity
        if f is None:
            print(f"{wave.index:>4} {len(wave.nodes):>5}  not monitored")
            continue
        kinds = ", ".join(f"{k} {c.requests}/{c.failed}" for k, c in f.by_kind.items())
        print(f"{wave.index:>4} {len(wave.nodes):>5} {f.rounds:>6} {f.requests:>8} "
              f"{f.failed:>6} {f.worst_window:>12} {f.in_maintenance:>9} {f.unreachable:>11}  "
              f"{kinds or f.unavailable or '-'}")


def node_memory(state_dir: Path, kube: Kube) -> None:
    topology = Topology.load(state_dir / "topology.json")
    assert topology.network is not None
    pods = kube.get("/api/v1/pods")["items"]
    by_uid = {p["metadata"]["uid"]: p for p in pods}
    print(f"\n{'node':<10} {'node processes':>15} {'pod processes':>14} {'total MiB':>10}")
    for node in topology.nodes:
        own = sum(rss_mib(pid) or 0.0 for pid in netns.pids(topology.network.node_netns(node.name)))
        in_pods = 0.0
        for name in netns.named(f"{topology.network.prefix}-pod-"):
            pod = by_uid.get(name.split("-pod-", 1)[1])
            if pod is not None and pod["spec"].get("nodeName") == node.name:
                in_pods += sum(rss_mib(pid) or 0.0 for pid in netns.pids(name))
        print(f"{node.name:<10} {own:>15.1f} {in_pods:>14.1f} {own + in_pods:>10.1f}")
    state = cluster.SandboxState.load(state_dir)
    simulator = state.pids.get("node-simulator")
    if simulator:
        print(f"node simulator (all nodes, one process): {rss_mib(simulator) or 0.0:.1f} MiB")


async def run(args: argparse.Namespace, state_dir: Path, stage: Stage) -> None:
    stage.task = asyncio.current_task()
    toolchain = ensure_toolchain()
    ensure_default_release(toolchain["helm"])
    env: WorkflowEnvironment | None = None
    mesh: Mesh | None = None
    try:
        stage(f"starting a real-network sandbox of 1+{args.workers} nodes in {state_dir}")
        started = time.monotonic()
        cluster.up(state_dir, nodes=args.workers + 1, control_planes=1, network="real",
                   simulator_args=("--reboot-seconds", "1"))
        print(f"`sandbox up --network real` with 1+{args.workers} nodes: "
              f"{time.monotonic() - started:.1f}s")
        kube = Kube(str(state_dir / "kubeconfig"))
        stage("deploying the echo mesh")
        deploy_echo(kube)
        await asyncio.to_thread(wait_for_echo, kube, args.workers + 1)
        node_memory(state_dir, kube)

        stage("starting the Temporal dev server")
        env = await local_temporal()
        name = "real-network-bench"
        spec = migration_spec(name, approvals={"policy": "none"})
        context = ActivityContext(kubeconfigs={name: str(cluster.worker_kubeconfig(state_dir))},
                                  helm=str(toolchain["helm"]))
        task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        mesh = Mesh(kube, args.interval)
        mesh.start()
        await asyncio.sleep(3 * args.interval)  # a few rounds before anything moves
        async with in_process_worker(env.client, context, task_queue):
            stage("migrating, with the mesh running")
            started = time.monotonic()
            handle = await start_migration(env.client, spec, task_queue)
            while True:
                progress = await progress_of(handle)
                mesh.period = period(progress)
                if progress.phase.ended:
                    break
                await asyncio.sleep(0.5)
            wall = time.monotonic() - started
        mesh.period = "after"
        await asyncio.sleep(3 * args.interval)
        mesh.join(timeout=60)
        print(f"\nmigration {progress.phase} in {wall:.0f}s, {len(progress.waves)} waves")
        mesh.report()
        monitor_report(progress)
    finally:
        cleaning_up()
        if mesh is not None:
            mesh.stop.set()
        stage("stopping the sandbox and the dev server")
        if (state_dir / "state.json").exists():
            cluster.down(state_dir)
        if env is not None:
            await env.shutdown()
        stop_children(keep=set())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between two rounds of the mesh")
    parser.add_argument("--deadline", type=float, default=1200.0)
    args = parser.parse_args()
    if problem := real_network_unsupported():
        sys.exit(f"real_network_bench: {problem}")
    state_dir = Path(tempfile.mkdtemp(prefix="bench-real-network-")) / "state"
    stage = Stage()
    try:
        with guard(args.deadline, stage):
            asyncio.run(run(args, state_dir.resolve(), stage))
    except (BenchStopped, asyncio.CancelledError):
        print(f"real_network_bench stopped: {stage.stopped}", file=sys.stderr)
        os._exit(1)
    except Exception:  # noqa: BLE001 - the cleanup ran; say why and leave
        traceback.print_exc()
        print(f"real_network_bench failed while {stage.now}", file=sys.stderr)
        os._exit(1)


if __name__ == "__main__":
    main()
