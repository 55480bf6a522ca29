"""Sandbox figures: warm `sandbox up` time and the node simulator's idle cost.

    PYTHONPATH=. .venv/bin/python bench/sandbox_bench.py [--nodes 200] [--idle-seconds 60]
        [--deadline SECONDS]

Prints how long `sandbox up --nodes 5` takes with a warm binary cache, then starts a sandbox of
``--nodes`` nodes and samples each process's CPU (from /proc/PID/stat) and resident memory over an
idle window. Figures, not assertions: tests assert behaviour, this reports cost. Whatever ends
it (done, a failure, ``--deadline``, Ctrl-C, SIGTERM) stops the sandbox it started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import process_cpu_seconds  # noqa: E402
from bench.lifecycle import Stage, cleaning_up, run_blocking, stop_sandbox  # noqa: E402
from bench.proc import rss_mib  # noqa: E402
from sandbox import cluster  # noqa: E402


def timed_up(state_dir: Path, nodes: int, zones: int) -> float:
    started = time.monotonic()
    cluster.up(state_dir, nodes=nodes, control_planes=1, zones=zones,
               timeout=600.0 + nodes)
    return time.monotonic() - started


def measure(args: argparse.Namespace, stage: Stage) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="bench-sandbox-")) / "state"
    try:
        stage(f"starting a sandbox of 5 nodes in {state_dir}")
        seconds = timed_up(state_dir, 5, 3)
        print(f"warm `sandbox up --nodes 5`: {seconds:.1f}s")
        cluster.down(state_dir)

        state_dir = state_dir.with_name("large")
        stage(f"starting a sandbox of {args.nodes} nodes in {state_dir}")
        seconds = timed_up(state_dir, args.nodes, 3)
        print(f"`sandbox up --nodes {args.nodes}`: {seconds:.1f}s")
        stage(f"measuring {args.nodes} idle nodes")
        state = cluster.SandboxState.load(state_dir)
        time.sleep(5)  # let the start-up burst settle
        before = {name: process_cpu_seconds(pid, waited_children=False)
                  for name, pid in state.pids.items()}
        time.sleep(args.idle_seconds)
        print(f"idle for {args.idle_seconds:.0f}s with {args.nodes} nodes:")
        for name, pid in state.pids.items():
            spent = process_cpu_seconds(pid, waited_children=False) - before[name]
            share = spent / args.idle_seconds * 100
            print(f"  {name:<24} CPU {share:5.1f}% of a core   RSS {rss_mib(pid) or 0.0:7.1f} MiB")
    finally:
        cleaning_up()
        stop_sandbox(state_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole bench (default: 300 + idle + 2 per node)")
    args = parser.parse_args()
    run_blocking("sandbox_bench", args.deadline or 300.0 + args.idle_seconds + 2 * args.nodes,
                 lambda stage: measure(args, stage))


if __name__ == "__main__":
    main()
