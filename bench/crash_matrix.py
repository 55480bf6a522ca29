"""The crash matrix (issue 14): every crash point, several runs each, printed as a table.

    python bench/crash_matrix.py [--runs 3] [--points "helm install,drain"] [--deadline S]

Each run is a whole migration on a fresh three-node sandbox whose worker is killed (SIGKILL)
once inside the chosen step; a new worker finishes the run, and the invariants of
`tests/chaos/matrix.py` are checked: completed, each node rebooted exactly once, nothing left
cordoned, no pod evicted twice, the Cilium release deployed with nothing pending. A run takes
a few minutes, most of it the sandbox and the wait until Temporal gives up on the killed
worker (the step's heartbeat timeout, 30 s) and retries the step on the new one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from bench.lifecycle import Stage, cleaning_up, guard  # noqa: E402
from sandbox.toolchain import ensure_toolchain  # noqa: E402
from tests.chaos.matrix import POINTS, Outcome, run_point  # noqa: E402
from tests.conftest import local_temporal  # noqa: E402


async def main(args: argparse.Namespace, stage: Stage) -> list[Outcome]:
    stage.task = asyncio.current_task()
    wanted = [p.strip() for p in args.points.split(",")] if args.points else None
    points = [p for p in POINTS if wanted is None or p.name in wanted]
    unknown = set(wanted or ()) - {p.name for p in points}
    if unknown:
        raise SystemExit(f"unknown points: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(p.name for p in POINTS)}")
    stage("building or finding the toolchain")
    toolchain = ensure_toolchain(lambda line: None)
    outcomes: list[Outcome] = []
    env = await local_temporal()
    try:
        address = env.client.service_client.config.target_host
        for run in range(args.runs):
            for point in points:
                stage(f"run {run + 1}/{args.runs}: crash inside {point.name}")
                with tempfile.TemporaryDirectory(prefix="crash-") as workdir:
                    outcome = await run_point(point, env.client, address, toolchain,
                                              Path(workdir))
                outcomes.append(outcome)
                verdict = "ok" if outcome.ok else ("not reached" if not outcome.crashed
                                                   else "; ".join(outcome.violations))
                print(f"  {point.name:<16} run {run + 1}: {verdict} ({outcome.seconds:.0f}s, "
                      f"helm revisions {outcome.helm_revisions}, "
                      f"{outcome.evictions} evictions)", flush=True)
    finally:
        cleaning_up()
        await env.shutdown()
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'point':<16} {'runs':>4} {'crashed':>7} {'violations':>10}  "
             f"{'helm revs':>9}  {'evictions':>9}  {'seconds':>7}"]
    names = list(dict.fromkeys(o.point.name for o in outcomes))
    for name in names:
        mine = [o for o in outcomes if o.point.name == name]
        revisions = sorted({o.helm_revisions for o in mine})
        lines.append(f"{name:<16} {len(mine):>4} {sum(o.crashed for o in mine):>7} "
                     f"{sum(len(o.violations) for o in mine):>10}  "
                     f"{','.join(map(str, revisions)):>9}  "
                     f"{sum(o.evictions for o in mine) / len(mine):>9.0f}  "
                     f"{sum(o.seconds for o in mine) / len(mine):>7.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--points", help="comma-separated point names (default: all)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole matrix (default: 10 min per run)")
    args = parser.parse_args()
    stage = Stage()
    count = args.runs * (len(args.points.split(",")) if args.points else len(POINTS))
    with guard(args.deadline or 600.0 * count, stage):
        results = asyncio.run(main(args, stage))
    print("\n" + table(results), flush=True)
    bad = [o for o in results if not o.ok]
    # Everything it started is stopped by now. A plain exit let the Temporal SDK's native
    # threads call into an interpreter that was shutting down ("Fatal Python error:
    # PyGILState_Release"), which aborted the process and lost the exit status.
    sys.stderr.flush()
    os._exit(1 if bad else 0)
