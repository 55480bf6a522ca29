"""Driving a rehearsed migration to its end with nobody at the keyboard.

It runs the same commands an operator would (`approve`, `decide`, `resume`, `abort`), through
the command line like the demo, and decides the way a rehearsal must in order to see the whole
cluster rather than stop at the first problem: every gate is approved as "rehearsal"; a blocked
node is recorded and skipped, and the run resumed, so later waves still show what blocks them;
a run that can no longer finish (skipped nodes hold finalize) is aborted. Meanwhile it watches
the copy's scheduler for pods evicted nodes leave with nowhere to go.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from activities.kubeapi import Kube
from client.demo_commands import cli_command
from plan.rehearsal import APPROVER, UnplacedPod
from sandbox.replica import unschedulable_pods

POLL_SECONDS = 1.0
NODES_PAGE = 500
# Polls in a row with nothing running, nothing to approve and nodes finalize waits for.
STUCK_POLLS = 3


@dataclass
class RunObserved:
    summary: dict[str, Any]  # the last `status -o json` summary
    nodes: list[dict[str, Any]]  # every node record
    unplaced: list[UnplacedPod] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blocked_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    aborted: str | None = None  # why the rehearsal stopped the run, when it did


class Autopilot:
    """What the rehearsal answers to one look at the run (`status -o json`): the commands to
    send, without the cluster and connection flags. It remembers the nodes it skipped and
    how long the run has stood still waiting for them; `stop` says why the run must be
    aborted, once it must."""

    def __init__(self, interactive: bool = False) -> None:
        self.interactive = interactive  # an operator steers; the autopilot only watches
        self.skipped: list[str] = []
        # Each skipped node's record as it was when blocked: a decision clears its blockers.
        self.blocked_records: dict[str, dict[str, Any]] = {}
        self.stuck = 0
        self.stop: str | None = None

    def respond(self, summary: dict[str, Any]) -> list[list[str]]:
        if self.interactive:
            return []
        commands = [["approve", gate, "--as", APPROVER, "--reason",
                     "rehearsal: granted without a person"]
                    for gate in summary["pending_gates"]["items"]]
        blocked = [n["name"] for n in summary["attention"]["items"]
                   if n["state"] == "blocked" and n["name"] not in self.skipped]
        self.blocked_records.update({n["name"]: n for n in summary["attention"]["items"]
                                     if n["name"] in blocked})
        commands += [["decide", node, "skip", "--as", APPROVER] for node in blocked]
        self.skipped += blocked
        counts = summary.get("counts") or {}
        busy = counts.get("running", 0) or counts.get("rolling-back", 0)
        if (summary.get("halted") or summary.get("paused")) and not busy and not blocked:
            commands.append(["resume", "--as", APPROVER])
        # Nothing left to run or approve, and finalize waits for nodes that were skipped.
        held = (summary["not_migrated"]["total"] and not busy and not blocked
                and not summary["pending_gates"]["items"] and not counts.get("pending", 0))
        self.stuck = self.stuck + 1 if held else 0
        if self.stuck >= STUCK_POLLS:
            self.stop = "nodes were skipped, so the run cannot finalize"
        return commands


def drive(cluster: str, address: tuple[str, ...], sandbox: Kube, placed_before: set[str],
          timeout: float, say: Callable[[str], None], interactive: bool = False
          ) -> RunObserved:
    """Steers the run of ``cluster`` until it ends; ``placed_before`` are pods the copy could
    not place before the migration started (not the migration's doing)."""
    deadline = time.monotonic() + timeout
    unplaced: list[UnplacedPod] = []
    pilot = Autopilot(interactive)
    summary: dict[str, Any] = {}
    while True:
        summary = _status(cluster, address) or summary
        if not summary:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the rehearsed run of {cluster} never answered `status`")
            time.sleep(POLL_SECONDS)
            continue
        if summary["phase"] in ("completed", "failed", "cancelled"):
            break
        wave = (summary.get("current_wave") or {}).get("index")
        if summary["phase"] == "migrating":
            unplaced += [UnplacedPod(pod=pod, message=why, wave=wave)
                         for pod, _, why in (line.partition(": ")
                                             for line in unschedulable_pods(sandbox))
                         if pod not in placed_before]
        for verb, *rest in pilot.respond(summary):
            answered = _command(verb, cluster, *rest, *address).returncode == 0
            if verb == "decide" and answered:
                say(f"node {rest[0]} is blocked: recorded, and skipped so that the later "
                    "waves are rehearsed too")
            elif verb == "decide":  # not waiting for a decision yet: ask again next time
                pilot.skipped.remove(rest[0])
        if pilot.stop is None and time.monotonic() > deadline:
            pilot.stop = f"the rehearsal ran out of time ({timeout:.0f}s)"
        if pilot.stop is not None:
            say(f"stopping the rehearsed run: {pilot.stop}")
            _command("abort", cluster, "--wait", *address)
            summary = _status(cluster, address) or summary
            break
        time.sleep(POLL_SECONDS)
    return RunObserved(summary=summary, nodes=_node_records(cluster, address),
                       unplaced=unplaced, skipped=pilot.skipped,
                       blocked_records=pilot.blocked_records, aborted=pilot.stop)


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), capture_output=True, text=True)


def _status(cluster: str, address: tuple[str, ...]) -> dict[str, Any] | None:
    result = _command("status", cluster, "-o", "json", *address)
    if result.returncode != 0:
        return None
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def _node_records(cluster: str, address: tuple[str, ...]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        result = _command("status", cluster, "--nodes", "all", "--offset", str(len(records)),
                          "--limit", str(NODES_PAGE), "-o", "json", *address)
        if result.returncode != 0:
            return records
        page = json.loads(result.stdout)
        records += page["nodes"]
        if not page["nodes"] or len(records) >= page["total"]:
            return records
