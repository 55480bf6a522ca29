"""A whole migration of a large sandbox: wall time against its physical bound, the product's own
API requests per node, history sizes, the worker's memory.

    PYTHONPATH=. .venv/bin/python bench/migration_bench.py [--nodes 100] [--max-unavailable 10]
        [--reboot-seconds 1] [--deadline SECONDS]

Figures, not assertions. The worker runs in this process with the sandbox's worker kubeconfig,
its own user, so the API server's audit log (`sandbox.audit`) counts its requests apart from
the simulated kubelets'. The bound (`sandbox.physical_bound`) is the plan's shortest wall time
given the simulator's delays; the difference is shown per phase from the workflow's history.
The run stops its sandbox and dev server when it ends, fails, passes ``--deadline``, or gets
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from temporalio.client import Client, WorkflowHistory  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from activities.agent import AGENT_DAEMONSET  # noqa: E402
from activities.context import ActivityContext  # noqa: E402
from activities.kubeapi import Kube  # noqa: E402
from bench.cpu import CpuSampler  # noqa: E402
from bench.history_figures import (  # noqa: E402
    AgentRestart,
    activity_spans,
    agent_restarts,
    parent_timeline,
    wave_gaps,
)
from bench.lifecycle import (  # noqa: E402
    BenchStopped,
    Stage,
    children,
    cleaning_up,
    guard,
    stop_children,
    stop_sandbox,
)  # noqa: E402
from bench.proc import rss_mib  # noqa: E402
from client.history_runs import fetch_runs  # noqa: E402
from plan.contract import Activity  # noqa: E402
from sandbox import audit, cluster, pki  # noqa: E402
from sandbox.cilium_release import ensure_default_release  # noqa: E402
from sandbox.physical_bound import (  # noqa: E402
    DEFAULT_GRACE_SECONDS,
    PlanBound,
    Timings,
    plan_bound,
    rolling_max_unavailable,
)
from sandbox.simulator.kubelet import Settings  # noqa: E402
from sandbox.toolchain import Toolchain, ensure_toolchain  # noqa: E402
from sandbox.topology import node_cidr_mask  # noqa: E402
from tests.conftest import local_temporal  # noqa: E402
from tests.integration.migration_support import (  # noqa: E402
    in_process_worker,
    migration_spec,
    start_migration,
)
from tests.workflows.support import wave_histories  # noqa: E402
from workflows.cluster import ClusterMigrationWorkflow  # noqa: E402
from workflows.identity import WAVE_WORKFLOW, node_workflow_id  # noqa: E402
from workflows.progress import NodeState, Phase, Progress  # noqa: E402

BUDGET_PER_NODE = 25  # issue 13: the product's requests per node, watches apart
MONITOR = "monitor"
CLEANUP_SECONDS = 30.0
TOP_REQUESTS = 15
NODE_STEPS = {Activity.DRAIN_NODE: "drain", Activity.RESTART_AGENT: "restart_agent",
              Activity.REBOOT_NODE: "reboot", Activity.VERIFY_NODE: "verify"}


def evicted_grace_periods(kube: Kube) -> dict[str, list[float]]:
    """Per node, the grace periods of the pods a drain evicts (not DaemonSet or mirror pods)."""
    evicted: dict[str, list[float]] = {}
    for pod in kube.get("/api/v1/pods")["items"]:
        meta, spec = pod["metadata"], pod.get("spec", {})
        owners = {o.get("kind") for o in meta.get("ownerReferences") or []}
        if (not spec.get("nodeName") or "DaemonSet" in owners
                or "kubernetes.io/config.mirror" in (meta.get("annotations") or {})
                or pod.get("status", {}).get("phase") in ("Succeeded", "Failed")):
            continue
        grace = spec.get("terminationGracePeriodSeconds")
        evicted.setdefault(spec["nodeName"], []).append(
            DEFAULT_GRACE_SECONDS if grace is None else float(grace))
    return evicted


def dev_server_pids() -> list[int]:
    """This process's children that run the Temporal CLI (the dev server)."""
    return [pid for pid, name in children().items() if "temporal" in name]


async def wait_completed(client: Client, workflow_id: str, stage: Stage) -> Progress:
    """Follows the run as `status` does, through its summary (a few kB whatever the node
    count), every 2 s, and reads the whole progress once, at the end. The bench's own polling
    must not load the worker it measures: asking every second for the whole progress (1,000
    node records) and each running node's step (50 more queries) once made a query run past
    the SDK's 2 s deadlock limit on the 2-core host."""
    handle = client.get_workflow_handle(workflow_id)
    last = ""
    while True:
        summary = await handle.query(ClusterMigrationWorkflow.get_summary)
        now = (f"migrating: phase {summary.phase.value}, "
               f"{summary.counts.get(NodeState.MIGRATED.value, 0)}/{summary.nodes} nodes "
               "migrated")
        if summary.blockers.items:
            now += "; waiting: " + "; ".join(summary.blockers.items)
        if now != last:
            stage(now)
            last = now
        if summary.phase is Phase.COMPLETED:
            progress: Progress = await handle.query(ClusterMigrationWorkflow.get_progress)
            return progress
        if summary.phase.ended:
            raise RuntimeError(f"the migration ended {summary.phase.value}: {summary.error}")
        await asyncio.sleep(2.0)


async def child_histories(client: Client, parent: str, nodes: list[str]
                          ) -> dict[str, WorkflowHistory]:
    limit = asyncio.Semaphore(16)

    async def one(node: str) -> tuple[str, WorkflowHistory]:
        async with limit:
            return node, await client.get_workflow_handle(
                node_workflow_id(parent, node)).fetch_history()

    return dict(await asyncio.gather(*(one(n) for n in nodes)))


def monitor_or_steps(uri: str) -> str:
    """The connectivity monitor's requests: its calls through the pod proxy, its list of
    cordoned nodes a round, and its watch on the echo pods (`activities.connectivity`). They
    follow the waves' duration, not the node count."""
    echo_pods = "cilium-migrate-echo" in uri and "labelSelector" in uri
    if "/proxy/dial" in uri or "spec.unschedulable" in uri or (
            echo_pods and ("resourceVersion=0" in uri or "watch=" in uri)):
        return MONITOR
    return ""


def print_requests(counts: audit.RequestCounts, nodes: int, wall: float,
                   waves_seconds: float) -> None:
    worker = pki.WORKER.user
    requests, watches = counts.total(worker), counts.total(worker, watches=True)
    monitor = counts.total(worker, tag=MONITOR)
    steps = requests - monitor
    print(f"\nthe product's API requests ({worker}, from the audit log): {requests} "
          f"({requests / nodes:.1f} per node), plus {watches} watches "
          f"({watches / nodes:.1f} per node)")
    print(f"  the steps: {steps} ({steps / nodes:.1f} per node, budget {BUDGET_PER_NODE}); "
          f"the connectivity monitor: {monitor} ({monitor / max(waves_seconds, 1):.1f} per "
          f"second of waves, {monitor / nodes:.1f} per node)")
    ranked = sorted(counts.of(worker).items(), key=lambda item: -item[1])
    for key, n in ranked[:TOP_REQUESTS]:
        print(f"  {n / nodes:7.2f}/node {n:7d}  {key.verb:<8} {key.resource}"
              + (f" ({key.tag})" if key.tag else ""))
    rest = sum(n for _, n in ranked[TOP_REQUESTS:])
    if rest:
        print(f"  {rest / nodes:7.2f}/node {rest:7d}  {len(ranked) - TOP_REQUESTS} other kinds "
              "(Helm's install and upgrade, mostly)")
    simulator = pki.NODE_SIMULATOR.user
    print(f"simulated kubelets over the same {wall:.0f}s: {counts.total(simulator)} requests "
          f"({counts.total(simulator) / nodes:.1f} per node), "
          f"{counts.total(simulator, watches=True)} watches")


def print_time(progress: Progress, runs: list[WorkflowHistory],
               children: dict[str, WorkflowHistory], waves: dict[str, WorkflowHistory],
               bound: PlanBound, wall: float) -> None:
    timeline = parent_timeline(runs)
    for wave_history in waves.values():  # a wave workflow's children are its nodes
        timeline.children.update(parent_timeline([wave_history]).children)
    phases = timeline.phase_seconds()
    phase_bound = {Phase.INSTALLING.value: bound.install,
                   Phase.MIGRATING.value: sum(bound.waves),
                   Phase.FINALIZING.value: bound.finalize,
                   Phase.REMOVING_FLANNEL.value: bound.remove_flannel}
    run = sum(phases.values())
    print(f"\nwall time {wall:.1f}s (workflow {run:.1f}s); physical bound {bound.total:.1f}s; "
          f"ratio {wall / bound.total:.1f}x")
    print("per phase: actual, bound, difference (parent activities in the phase)")
    for phase, seconds in phases.items():
        spent: dict[str, float] = defaultdict(float)
        for activity in timeline.activities_in(phase):
            spent[activity.name] += activity.seconds
        steps = ", ".join(f"{name} {s:.1f}s" for name, s in
                          sorted(spent.items(), key=lambda item: -item[1])[:4])
        limit = phase_bound.get(phase, 0.0)
        print(f"  {phase:<17} {seconds:7.1f}s {limit:7.1f}s {seconds - limit:+7.1f}s  {steps}")
    # Outside the waves the product mostly waits for the cluster (Helm's wait for the agents,
    # the echo mesh's DaemonSet, the agents' own rolling restart): what the ratio would be if
    # the waves took exactly their bound is the lowest this cluster on this host allows.
    floor = run - phases.get(Phase.MIGRATING.value, 0.0) + sum(bound.waves)
    print(f"with the waves at their bound and every other phase as it went: {floor:.1f}s, "
          f"ratio {floor / bound.total:.2f}x")
    # Inside the waves: each wave's slowest node, step by step, against its bound.
    print("waves: actual span (first child started to last child completed), bound, "
          "slowest node's steps (actual/bound)")
    waves_seconds = 0.0
    for index, wave in enumerate(progress.waves):
        ids = {node_workflow_id(runs[0].workflow_id, n): n for n in wave.nodes}
        times = [timeline.children[i] for i in ids if i in timeline.children]
        if not times:
            continue
        span = (max(e for _, e in times) - min(s for s, _ in times)).total_seconds()
        waves_seconds += span
        slowest = max((i for i in ids if i in timeline.children),
                      key=lambda i: timeline.children[i][1] - timeline.children[i][0])
        taken: dict[str, float] = defaultdict(float)
        for activity in activity_spans(children[ids[slowest]]):
            taken[NODE_STEPS.get(activity.name, "other")] += activity.seconds
        node_bound = bound.slowest[index]
        detail = " ".join(
            f"{step} {taken[step]:.1f}/{getattr(node_bound, step):.1f}"
            for step in ("drain", "restart_agent", "reboot", "verify"))
        print(f"  wave {wave.index:<3} {len(wave.nodes):4d} nodes {span:7.1f}s "
              f"{bound.waves[index]:6.1f}s  {ids[slowest]}: {detail} other {taken['other']:.1f}")
    print_agent_restarts(agent_restarts(children, Activity.RESTART_AGENT))
    migrating = phases.get(Phase.MIGRATING.value, 0.0)
    print("  between waves (health checks, gates, starting children): "
          f"{migrating - waves_seconds:.1f}s, of which:")
    for line in wave_gaps(runs, waves, WAVE_WORKFLOW, Activity.MONITOR_CONNECTIVITY,
                          Activity.CHECK_HEALTH).lines():
        print("  " + line)


def print_agent_restarts(restarts: list[AgentRestart]) -> None:
    """Where the agent restarts' time went: the cluster replacing and starting the agent, or the
    step noticing it (timestamps in whole seconds: each part is +-1 s)."""
    if not restarts:
        return
    print(f"agent restarts ({len(restarts)}): median / 90th percentile / max, seconds")
    for part in ("replacing", "starting", "noticing"):
        values = sorted(getattr(r, part) for r in restarts)
        print(f"  {part:<10} {statistics.median(values):6.1f} "
              f"{values[int(0.9 * (len(values) - 1))]:6.1f} {values[-1]:6.1f}")


def print_histories(runs: list[WorkflowHistory], children: dict[str, WorkflowHistory],
                    waves: dict[str, WorkflowHistory]) -> None:
    sizes = sorted(len(h.events) for h in children.values())
    parent = sum(len(run.events) for run in runs)
    per_wave = sorted(len(h.events) for h in waves.values())
    print(f"\nhistory events: parent {parent} ({parent / len(children):.1f} per node) in "
          f"{len(runs)} runs ({', '.join(str(len(run.events)) for run in runs)}); "
          f"wave workflows {len(per_wave)}: {sum(per_wave) / len(children):.1f} per node, "
          f"max {max(per_wave, default=0)}; node workflows {len(sizes)}: "
          f"min {sizes[0]}, median {statistics.median(sizes):.0f}, max {sizes[-1]}, "
          f"total {sum(sizes)}")


def cilium_values(mask: int, args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {"ipam": {"operator": {"clusterPoolIPv4MaskSize": mask}}}
    if args.agent_max_unavailable:  # the final rolling restart's pace (the chart's default: 2)
        pace = args.agent_max_unavailable  # an int is a count; the API refuses "10"
        values["updateStrategy"] = {"rollingUpdate": {
            "maxUnavailable": pace if pace.endswith("%") else int(pace)}}
    return values


def sampled_processes(state_dir: Path) -> dict[str, int]:
    """The processes whose CPU the bench reports: the sandbox's, the dev server, and this one
    (the worker, its Helm runs and the bench's own polling)."""
    pids = dict(cluster.SandboxState.load(state_dir).pids)
    pids.update({"temporal" if i == 0 else f"temporal-{i}": pid
                 for i, pid in enumerate(dev_server_pids())})
    pids["worker+bench"] = os.getpid()
    return pids


def print_cpu(cpu: CpuSampler, runs: list[WorkflowHistory]) -> None:
    """Average cores busy per phase, the host's and each process's: a phase far over its
    bound with the host near its core count was short of CPU, not waiting on the product."""
    names = list(cpu.pids)
    print(f"\nCPU: average cores busy (the host has {os.cpu_count()})")
    print(f"  {'phase':<17} {'seconds':>7} {'host':>5}  "
          + " ".join(f"{n[:14]:>14}" for n in names))
    windows = [(phase, start.timestamp(), end.timestamp())
               for phase, start, end in parent_timeline(runs).phases]
    if cpu.samples:
        windows.append(("whole run", cpu.samples[0].at, cpu.samples[-1].at))
    for phase, start, end in windows:
        figures = cpu.cores(start, end)
        if figures is None:
            continue
        host, per = figures
        print(f"  {phase:<17} {end - start:7.0f} {host:5.2f}  "
              + " ".join(f"{per.get(n, float('nan')):14.2f}" for n in names))


async def _within(what: Awaitable[Any], name: str) -> None:
    try:
        await asyncio.wait_for(what, CLEANUP_SECONDS)
    except Exception as error:  # noqa: BLE001 - cleanup goes on with the next thing
        print(f"stopping {name}: {type(error).__name__} {error}", file=sys.stderr)


async def run(args: argparse.Namespace, state_dir: Path, stage: Stage) -> None:
    stage.task = asyncio.current_task()
    stage("building or finding the toolchain")
    toolchain: Toolchain = ensure_toolchain()
    ensure_default_release(toolchain["helm"])  # the tests' spec installs it
    env: WorkflowEnvironment | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        stage(f"starting a sandbox of {args.nodes} nodes in {state_dir}")
        started = time.monotonic()
        cluster.up(state_dir, nodes=args.nodes, control_planes=1, zones=3,
                   simulator_args=("--reboot-seconds", str(args.reboot_seconds)),
                   timeout=600.0 + args.nodes)
        print(f"sandbox with {args.nodes} nodes up in {time.monotonic() - started:.0f}s")
        stage("starting the Temporal dev server")
        env = await local_temporal()
        name = "bench"
        # Past 256 nodes the sandbox's /16 is cut into smaller per-node blocks, and so must
        # Cilium's pool be (the preflight refuses a pool without a block for every node).
        mask = node_cidr_mask(args.nodes)
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"maxUnavailable": args.max_unavailable},
                              drain={"timeout": "5m"}, reboot={"timeout": "5m"},
                              cilium={"extraValues": cilium_values(mask, args)})
        evicted = evicted_grace_periods(Kube(str(state_dir / "kubeconfig")))
        task_queue = f"bench-{uuid.uuid4().hex[:6]}"
        context = ActivityContext(
            kubeconfigs={name: str(cluster.worker_kubeconfig(state_dir))},
            helm=str(toolchain["helm"]))
        worker = in_process_worker(env.client, context, task_queue)
        worker_task = asyncio.create_task(worker.run())
        rss_before = rss_mib(os.getpid(), "VmRSS")
        since = audit.mark(state_dir)
        started = time.monotonic()
        with CpuSampler(sampled_processes(state_dir)) as cpu:
            handle = await start_migration(env.client, spec, task_queue)
            progress = await wait_completed(env.client, handle.id, stage)
        wall = time.monotonic() - started
        stage("reading the audit log and the histories")
        counts = audit.count_requests(state_dir, since, tag=monitor_or_steps)
        runs = await fetch_runs(env.client, handle.id)
        children = await child_histories(env.client, handle.id, list(progress.nodes))
        waves = await wave_histories(env.client, runs)
        settings = Settings(reboot_seconds=args.reboot_seconds)
        timings = Timings(exit_delay=settings.exit_delay,
                          agent_ready_delay=settings.agent_ready_delay,
                          reboot_seconds=settings.reboot_seconds,
                          container_restart_seconds=settings.container_restart_seconds)
        # The final rolling restart goes at the agents' DaemonSet's own pace (the chart's
        # default, or what the spec's values set).
        agents = Kube(str(state_dir / "kubeconfig")).get(
            f"/apis/apps/v1/namespaces/{spec.cilium.namespace}/daemonsets/{AGENT_DAEMONSET}")
        pace = rolling_max_unavailable(agents, args.nodes)
        bound = plan_bound([w.nodes for w in progress.waves], evicted, nodes=args.nodes,
                           timings=timings, agent_max_unavailable=pace)

        print(f"\nmigration of {args.nodes} nodes in {len(progress.waves)} waves "
              f"(maxUnavailable {args.max_unavailable}, reboot {args.reboot_seconds:g}s, "
              f"agents restarted {pace} at a time at the end)")
        print_time(progress, runs, children, waves, bound, wall)
        print_requests(counts, args.nodes, wall,
                       parent_timeline(runs).phase_seconds().get(Phase.MIGRATING.value, 0.0))
        print_histories(runs, children, waves)
        print_cpu(cpu, runs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nworker memory: it runs in this process (with the bench's own clients), "
              f"RSS {rss_before or 0:.0f} MiB before the run, peak {peak:.0f} MiB "
              "(getrusage ru_maxrss; the peak may date from before the run)")
        for pid in dev_server_pids():
            print(f"Temporal dev server (pid {pid}): peak RSS {rss_mib(pid, 'VmHWM') or 0:.0f} MiB")
    finally:
        cleaning_up()
        stage("stopping the sandbox, the worker and the dev server")
        # The sandbox first: activities still waiting on it then fail at once, so the worker
        # can shut down.
        stop_sandbox(state_dir)
        if stray := stop_children(keep=set(dev_server_pids())):
            print(f"stopped what activities had started: {', '.join(stray)}", file=sys.stderr)
        if worker is not None and worker_task is not None:
            await _within(worker.shutdown(), "the worker")
            worker_task.cancel()
        if env is not None:
            await _within(env.shutdown(), "the dev server")
        if stray := stop_children(keep=set()):
            print(f"stopped what was left: {', '.join(stray)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--max-unavailable", type=int, default=10)
    parser.add_argument("--reboot-seconds", type=float, default=1.0)
    parser.add_argument("--agent-max-unavailable", default=None,
                        help="the agents' DaemonSet's maxUnavailable (a count or a percentage; "
                             "default: the chart's), the pace of the final rolling restart")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole bench (default: 900 + 3 per node)")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    deadline = args.deadline or 900.0 + 3 * args.nodes
    state_dir = (args.state_dir or Path(tempfile.mkdtemp(prefix="bench-migration-")) / "state")
    stage = Stage()
    try:
        with guard(deadline, stage):
            asyncio.run(run(args, state_dir.resolve(), stage))
    except (BenchStopped, asyncio.CancelledError):
        failed(f"migration_bench stopped: {stage.stopped}")
    except Exception:  # noqa: BLE001 - the cleanup ran; say why and leave
        traceback.print_exc()
        failed(f"migration_bench failed while {stage.now}")


def failed(message: str) -> None:
    print(message, file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)  # everything it started is stopped; stuck activity threads are not waited for


if __name__ == "__main__":
    main()
