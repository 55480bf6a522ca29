"""A Progress as a large migration reports it midway, built in process (no server): the unit
tests of the bounded views and bench/status_bench.py measure the same shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plan.contract import CheckResult, DrainBlocker, NodeStep
from workflows.progress import (
    Approval,
    NodeProgress,
    NodeState,
    Phase,
    Progress,
    WaveProgress,
)

START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def large_progress(nodes: int, wave_size: int = 50, blocked: int = 60,
                   running_wave: int | None = None) -> Progress:
    """``nodes`` workers in waves of ``wave_size`` (wave 1, the canary, has one node). Waves
    before ``running_wave`` (default: the middle one) migrated, except ``blocked`` nodes spread
    over them that wait for a decision; the running wave is half done; later waves pending."""
    names = [f"worker-{i:05d}" for i in range(1, nodes + 1)]
    groups = [names[:1]] + [names[i:i + wave_size] for i in range(1, nodes, wave_size)]
    running = running_wave if running_wave is not None else len(groups) // 2 + 1
    progress = Progress(cluster="prod-eu", phase=Phase.MIGRATING, started_at=START,
                        pending_gates=[f"wave-{running + 1}"])
    for index, group in enumerate(groups, start=1):
        state = "done" if index < running else "running" if index == running else "pending"
        progress.waves.append(WaveProgress(index=index, kind="canary" if index == 1 else
                                           "workers", nodes=group, zone=f"zone-{index % 3}",
                                           state=state))
        for position, name in enumerate(group):
            progress.nodes[name] = _node(name, index, state, position, len(group))
        if index < running:
            progress.approvals.append(Approval(gate=f"wave-{index}", approver="alice",
                                               reason="looks good", at=START))
    done = [n for n in progress.nodes.values() if n.state is NodeState.MIGRATED]
    for node in done[::max(1, len(done) // blocked)][:blocked]:
        node.state, node.step = NodeState.BLOCKED, NodeStep.DRAIN
        node.finished_at = None
        node.blocker = "drain: pod db/db-0 blocked by PDB db/db-pdb"
        node.blockers = [DrainBlocker(pod="db/db-0", pdb="db/db-pdb",
                                      reason="needs 2 healthy, has 2")]
    return progress


def _node(name: str, wave: int, wave_state: str, position: int, size: int) -> NodeProgress:
    node = NodeProgress(name=name, wave=wave)
    if wave_state == "pending" or (wave_state == "running" and position >= size // 2):
        return node
    node.started_at = START + timedelta(minutes=wave)
    node.boot_id_before, node.cordoned_by_us = f"{name}-boot-0", True
    node.state, node.step = NodeState.RUNNING, NodeStep.REBOOT
    if wave_state == "done":
        node.state, node.step = NodeState.MIGRATED, NodeStep.DONE
        node.finished_at = node.started_at + timedelta(seconds=95)
        node.boot_id_after = f"{name}-boot-1"
        node.verify = [CheckResult(name=check, outcome="passed", detail="ok")
                       for check in ("pod-ip-in-pool", "api-server", "peers")]
    return node
