"""What the sandbox cluster alone takes to replace a wave's DaemonSet pods, with no product in
the loop: the floor under migration_bench's waves on this host.

    PYTHONPATH=. .venv/bin/python bench/cluster_baseline.py [--nodes 300] [--wave 50]
        [--deadline SECONDS]

On a fresh sandbox it deletes the flannel pod of one node, then of ``--wave`` nodes at once,
and times each node until the DaemonSet's new pod there is Ready (a watch; no Temporal, no
worker). The physics is the old pod's exit (the simulator's ``exit_delay``, flannel's pods
becoming Ready as they start); everything past it is the control plane and the simulated
kubelets: the DaemonSet controller noticing and creating, the scheduler binding, the kubelet
starting and reporting. migration_bench's agent restarts go through the same chain, plus the
agent's own start-up delay. Figures, not assertions; the sandbox is stopped at the end, on
failure, at the deadline, on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.kubeapi import Kube, Obj, pod_ready  # noqa: E402
from bench.cpu import CpuSampler  # noqa: E402
from bench.lifecycle import Stage, cleaning_up, run_blocking, stop_sandbox  # noqa: E402
from sandbox import cluster  # noqa: E402
from sandbox.simulator.kubelet import Settings  # noqa: E402

FLANNEL_PODS = "/api/v1/namespaces/kube-flannel/pods"
FLANNEL_SELECTOR = "app=flannel"
WAIT_SECONDS = 600.0


def replace(kube: Kube, nodes: list[str]) -> dict[str, float]:
    """Deletes the flannel pod of each of ``nodes`` at once; seconds from the first delete
    until each node's new pod was Ready."""
    pods = kube.follow(FLANNEL_PODS, {"labelSelector": FLANNEL_SELECTOR})
    wanted = set(nodes)
    old = {p["metadata"]["uid"] for p in pods.objects if p["spec"].get("nodeName") in wanted}
    started = time.monotonic()
    for pod in pods.objects:
        if pod["spec"].get("nodeName") in wanted:
            kube.delete(f"{FLANNEL_PODS}/{pod['metadata']['name']}")
    ready: dict[str, float] = {}

    def all_ready(found: list[Obj]) -> bool:
        for pod in found:
            node = pod["spec"].get("nodeName")
            if (node in wanted and node not in ready and pod["metadata"]["uid"] not in old
                    and pod_ready(pod)):
                ready[node] = time.monotonic() - started
        return len(ready) == len(wanted)

    if not pods.wait(all_ready, WAIT_SECONDS):
        raise RuntimeError(f"only {len(ready)} of {len(wanted)} new flannel pods Ready "
                           f"after {WAIT_SECONDS:.0f}s")
    pods.close()
    return ready


def report(what: str, seconds: dict[str, float], bound: float, cpu: CpuSampler) -> None:
    values = sorted(seconds.values())
    figures = cpu.cores(cpu.samples[0].at, cpu.samples[-1].at)
    busy = f"; host {figures[0]:.2f} cores busy" if figures else ""
    print(f"{what}: new pod Ready after median {statistics.median(values):.1f}s, "
          f"90th percentile {values[int(0.9 * (len(values) - 1))]:.1f}s, "
          f"last {values[-1]:.1f}s (bound {bound:.1f}s){busy}")
    if figures:
        print("  cores busy: " + ", ".join(f"{name} {cores:.2f}"
                                           for name, cores in figures[1].items()))


def run(args: argparse.Namespace, state_dir: Path, stage: Stage) -> None:
    try:
        stage(f"starting a sandbox of {args.nodes} nodes in {state_dir}")
        cluster.up(state_dir, nodes=args.nodes, control_planes=1, zones=3,
                   simulator_args=("--reboot-seconds", "1"), timeout=600.0 + args.nodes)
        kube = Kube(str(state_dir / "kubeconfig"))
        workers = sorted(n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]
                         if n["metadata"]["name"].startswith("worker-"))
        bound = Settings().exit_delay  # the old pod's exit; flannel is Ready as it starts
        pids = dict(cluster.SandboxState.load(state_dir).pids)
        print(f"\n{args.nodes} nodes; flannel pods replaced by their DaemonSet")
        stage("replacing one node's flannel pod")
        with CpuSampler(pids, interval=0.5) as cpu:
            one = replace(kube, workers[:1])
        report("1 node", one, bound, cpu)
        time.sleep(10)  # the controller's status updates settle
        stage(f"replacing {args.wave} nodes' flannel pods at once")
        with CpuSampler(pids, interval=0.5) as cpu:
            wave = replace(kube, workers[1:1 + args.wave])
        report(f"{len(wave)} nodes at once", wave, bound, cpu)
    finally:
        cleaning_up()
        stage("stopping the sandbox")
        stop_sandbox(state_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--wave", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole bench (default: 900 + 1 per node)")
    args = parser.parse_args()
    state_dir = (Path(tempfile.mkdtemp(prefix="bench-baseline-")) / "state").resolve()
    run_blocking("cluster_baseline", args.deadline or 900.0 + args.nodes,
                 lambda stage: run(args, state_dir, stage))


if __name__ == "__main__":
    main()
