"""The crash matrix (issue 14): a whole migration on a fresh sandbox whose worker is killed once
inside one chosen step, a new worker started, and the run checked against what must hold after
any crash.

The invariants, read from the cluster and the sandbox's own records rather than from the
product's account of itself:
- the run completes, with every node migrated;
- every node rebooted exactly once (the bootIDs the simulated kubelet came up with, in its log);
- no node is left cordoned;
- no pod was evicted twice (the API server's audit log: successful evictions by the worker);
- the Cilium release ends deployed, with no revision left pending or failed.

Used by `tests/chaos/test_crash_points.py` (a few points, in the default run) and by
`bench/crash_matrix.py` (every point, several runs, a table).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.kubeapi import Kube
from plan.contract import Activity
from sandbox import audit, cluster, pki
from sandbox.toolchain import Toolchain
from tests.integration.migration_support import (
    WorkerProcess,
    fresh_sandbox,
    migration_spec,
    start_migration,
    wait_progress,
)
from workflows.progress import NodeState, Phase

CLUSTER = "chaos"
WORKERS = 2  # plus one control-plane node: three nodes to migrate
CRASH_WORKER = Path(__file__).with_name("crash_worker.py")


@dataclass(frozen=True)
class CrashPoint:
    """Kill the worker when the ``occurrence``-th run of ``step`` has run ``delay`` seconds,
    or at its end (None, or a step that finished sooner): after its side effects, before its
    result reached Temporal."""

    name: str
    step: str
    occurrence: int = 1
    delay: float | None = None


POINTS = [
    CrashPoint("snapshot", Activity.SNAPSHOT_NODE),
    CrashPoint("cordon", Activity.CORDON_NODE),
    CrashPoint("drain", Activity.DRAIN_NODE, delay=0.5),
    CrashPoint("label", Activity.LABEL_NODE),
    CrashPoint("agent restart", Activity.RESTART_AGENT, delay=1.0),
    CrashPoint("reboot request", Activity.REBOOT_NODE, delay=0.3),
    CrashPoint("reboot wait", Activity.REBOOT_NODE),
    CrashPoint("verify", Activity.VERIFY_NODE),
    CrashPoint("uncordon", Activity.UNCORDON_NODE),
    CrashPoint("helm install", Activity.HELM_UPGRADE, delay=3.0),
    CrashPoint("node config", Activity.APPLY_NODE_CONFIG),
    CrashPoint("recycle", Activity.RECYCLE_PODS),
    CrashPoint("helm upgrade", Activity.HELM_UPGRADE, occurrence=2, delay=3.0),
    CrashPoint("rollout restart", Activity.ROLLOUT_RESTART, delay=2.0),
    CrashPoint("flannel removal", Activity.REMOVE_FLANNEL),
]


@dataclass
class Outcome:
    point: CrashPoint
    crashed: bool = False  # the worker died where asked (a point never reached is not a pass)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    helm_revisions: int = 0
    evictions: int = 0  # successful ones, all pods: shows the eviction check had work to do

    @property
    def ok(self) -> bool:
        return self.crashed and not self.violations


async def run_point(point: CrashPoint, client: Client, address: str, toolchain: Toolchain,
                    workdir: Path, timeout: float = 900.0) -> Outcome:
    """One migration with one crash at ``point``; violations of the invariants are listed."""
    outcome = Outcome(point)
    started = time.monotonic()
    state_dir = workdir / "state"
    with fresh_sandbox(state_dir, workers=WORKERS, zones=1) as admin:
        before = boot_ids(admin)
        task_queue = f"chaos-{uuid.uuid4().hex[:8]}"
        # The worker's own user, so the audit log tells its requests apart.
        kubeconfig = cluster.worker_kubeconfig(state_dir)
        crashing = _CrashingWorker(address, task_queue, str(kubeconfig), toolchain, point,
                                   workdir / "worker-crashing.log")
        replacement = WorkerProcess(address, task_queue, state_dir, toolchain, CLUSTER,
                                    workdir / "worker-replacement.log", kubeconfig=kubeconfig)
        crashing.start()
        try:
            handle = await start_migration(
                client, migration_spec(CLUSTER, approvals={"policy": "none"}), task_queue)
            outcome.crashed = await crashing.wait_for_crash(handle, timeout)
            replacement.start()
            if outcome.crashed:
                await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED,
                                    "completion after the crash", timeout)
                report = await handle.result()
                outcome.violations += [f"{n}: {s.state.value}" for n, s in report.nodes.items()
                                       if s.state is not NodeState.MIGRATED]
        except AssertionError as failed:
            outcome.violations.append(str(failed).splitlines()[0][:300])
        finally:
            crashing.stop()
            replacement.stop()
        if outcome.crashed:
            outcome.violations += check_invariants(state_dir, admin, toolchain, before)
            outcome.helm_revisions = len(helm_records(state_dir, toolchain))
            outcome.evictions = sum(evictions(state_dir).values())
    outcome.seconds = time.monotonic() - started
    return outcome


class _CrashingWorker:
    def __init__(self, address: str, task_queue: str, kubeconfig: str, toolchain: Toolchain,
                 point: CrashPoint, log: Path) -> None:
        delay = "end" if point.delay is None else str(point.delay)
        self.command = [sys.executable, str(CRASH_WORKER), address, task_queue, CLUSTER,
                        kubeconfig, str(toolchain["helm"]), point.step,
                        str(point.occurrence), delay]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log)

    async def wait_for_crash(self, handle: Any, timeout: float) -> bool:
        """True once the worker died at its point; False if the run ended first or time ran
        out (the point was never reached)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return "crashing inside" in self.log.read_text(errors="replace")
            described = await handle.describe()
            if described.status is not None and described.status.name != "RUNNING":
                return False
            await asyncio.sleep(0.5)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


# ---- the invariants --------------------------------------------------------------------------

def boot_ids(kube: Kube) -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["bootID"]
            for n in kube.get("/api/v1/nodes")["items"]}


def check_invariants(state_dir: Path, kube: Kube, toolchain: Toolchain,
                     before: dict[str, str]) -> list[str]:
    violations = []
    for node, boots in reboots(state_dir, before).items():
        if boots != 1:
            violations.append(f"{node} rebooted {boots} times")
    for node in kube.get("/api/v1/nodes")["items"]:
        if node["spec"].get("unschedulable"):
            violations.append(f"{node['metadata']['name']} left cordoned")
    for pod, times in evictions(state_dir).items():
        if times > 1:
            violations.append(f"pod {pod} evicted {times} times")
    records = helm_records(state_dir, toolchain)
    unsettled = [f"{r['revision']} {r['status']}" for r in records
                 if r["status"] not in ("deployed", "superseded")]
    if unsettled:
        violations.append(f"helm revisions not settled: {', '.join(unsettled)}")
    if not records or records[-1]["status"] != "deployed":
        violations.append("the Cilium release's last revision is not deployed")
    return violations


_BOOTED = re.compile(r"node (\S+): kubelet up \(bootID ([0-9a-f-]+)\)")


def reboots(state_dir: Path, before: dict[str, str]) -> dict[str, int]:
    """Per node, the bootIDs the simulated kubelet came up with other than the one it had."""
    seen: dict[str, set[str]] = defaultdict(set)
    log = state_dir / "logs" / "node-simulator.log"
    for node, boot_id in _BOOTED.findall(log.read_text(errors="replace")):
        if boot_id != before.get(node):
            seen[node].add(boot_id)
    return {node: len(seen[node]) for node in before}


def evictions(state_dir: Path) -> Counter[str]:
    """Successful evictions by the product's worker, per pod."""
    evicted: Counter[str] = Counter()
    with open(audit.audit_log(state_dir), errors="replace") as log:
        for line in log:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (ref.get("subresource") == "eviction" and event.get("verb") == "create"
                    and event.get("stage") == "ResponseComplete"
                    and (event.get("user") or {}).get("username") == pki.WORKER.user
                    and (event.get("responseStatus") or {}).get("code") in (200, 201)):
                evicted[f"{ref.get('namespace')}/{ref.get('name')}"] += 1
    return evicted


def helm_records(state_dir: Path, toolchain: Toolchain) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(toolchain["helm"]), "history", "cilium", "-n", "kube-system", "-o", "json",
         "--kubeconfig", str(state_dir / "kubeconfig")],
        capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return []
    records: list[dict[str, Any]] = json.loads(result.stdout)
    return records
