"""How a migration looks on a terminal: the `status` view, the `list` table, and a screen that
redraws in place for `status --watch`.

Pure functions of the models plus a clock, so what an operator sees can be tested without a
server; only `Screen` writes to the terminal.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from client.rendering import table
from workflows.progress import NodeProgress, NodeState, Progress

# How a verify check's outcome reads; "not checked" is neither a pass nor a failure.
OUTCOME_WORDS = {"passed": "ok", "failed": "FAILED", "not-checked": "not checked"}
# ANSI: cursor home, clear to end of line, clear to end of screen, hide and show the cursor.
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def elapsed(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return "-"
    seconds = max(0, int(((end or now) - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def approve_command(cluster: str, gate: str, connection: str = "") -> str:
    return (f"cilium-migrate approve {shlex.quote(cluster)} {shlex.quote(gate)} "
            f"--reason '...'{connection}")


def render_progress(progress: Progress, now: datetime | None = None,
                    connection: str = "") -> str:
    """The status view. ``connection`` repeats the user's connection flags in suggestions."""
    now = now or datetime.now(UTC)
    state = progress.phase.value + (" (paused)" if progress.paused else "")
    out = [f"Cluster {progress.cluster}   phase {state}   elapsed "
           f"{elapsed(progress.started_at, progress.finished_at, now)}"]
    counts = progress.counts()
    if counts:
        out.append("Nodes: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if progress.chart:
        chart = progress.chart
        out.append(f"Chart {chart.name} {chart.version} {chart.digest} from {chart.source}")
    if progress.error:
        out += ["", f"Error: {progress.error}"]
    if progress.halted:
        out += ["", f"Halted: {progress.halted}",
                f"  resume with: cilium-migrate resume {shlex.quote(progress.cluster)}"
                f"{connection}"]
    if progress.pending_gates:
        out += ["", "Waiting for approval:"]
        out += [f"  {gate:<16} {approve_command(progress.cluster, gate, connection)}"
                for gate in progress.pending_gates]
    blocked = [n for n in progress.nodes.values() if n.state is NodeState.BLOCKED]
    for node in blocked:
        out += ["", f"Node {node.name} waits for a decision: {node.blocker or '-'}"]
        out += [f"  pod {b.pod}: {b.reason}" + (f" (PDB {b.pdb})" if b.pdb else "")
                for b in node.blockers]
        out += [f"  check {c.name}: {OUTCOME_WORDS[c.outcome]} {c.detail}".rstrip()
                for c in node.verify]
        out.append(f"  decide with: cilium-migrate decide {shlex.quote(progress.cluster)} "
                   f"{shlex.quote(node.name)} retry|rollback|skip{connection}")
    if progress.waves:
        out += ["", table([[str(w.index), w.kind, w.zone or "-", w.state, ", ".join(w.nodes)]
                           for w in progress.waves], ["wave", "kind", "zone", "state", "nodes"])]
    if progress.nodes:
        out += ["", table([_node_row(n, now) for n in _by_wave(progress.nodes.values())],
                          ["node", "wave", "state", "step", "elapsed", "blocker"])]
    unchecked = [f"  {n.name} {c.name}: {c.detail}".rstrip()
                 for n in _by_wave(progress.nodes.values()) if n.state is not NodeState.BLOCKED
                 for c in n.verify if c.outcome == "not-checked"]
    if unchecked:
        out += ["", "Verify checks not made (nothing to check against yet):", *unchecked]
    if progress.excluded_nodes:
        out.append(f"excluded: {', '.join(progress.excluded_nodes)}")
    warnings = [f for f in progress.findings if f.severity != "info"]
    if warnings:
        out += ["", "Findings:"] + [f"  {f.severity}: {f.id}: {f.message}" +
                                    (" (acknowledged)" if f.acknowledged else "")
                                    for f in warnings]
    if progress.approvals:
        out += ["", "Approvals:"]
        out += [f"  {a.gate:<16} {a.approver:<12} {a.at:%Y-%m-%d %H:%M:%S}"
                + (f"  {a.reason}" if a.reason else "") for a in progress.approvals]
    return "\n".join(out)


def _by_wave(nodes: Iterable[NodeProgress]) -> list[NodeProgress]:
    return sorted(nodes, key=lambda n: (n.wave, n.name))


def _node_row(node: NodeProgress, now: datetime) -> list[str]:
    blocker = node.blocker or node.error or ""
    return [node.name, str(node.wave), node.state.value,
            node.step.value if node.step else "-",
            elapsed(node.started_at, node.finished_at, now) if node.started_at else "-",
            blocker if len(blocker) <= 80 else blocker[:77] + "..."]


def render_list(rows: list[list[str]]) -> str:
    if not rows:
        return "No migrations."
    return table(rows, ["cluster", "status", "phase", "started", "nodes", "waiting", "workflow"])


class Screen:
    """Redraws a frame in place only when it changed: cursor home, each line followed by
    clear-to-end-of-line, then clear below; nothing is erased before the new text is there, so
    the view does not flicker. On a stream that is not a terminal, changed frames are appended.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last: str | None = None

    def __enter__(self) -> Screen:
        if self.tty:
            self.stream.write(HIDE_CURSOR + "\x1b[2J")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.stream.write(SHOW_CURSOR)
        self.stream.flush()

    def show(self, frame: str) -> bool:
        if frame == self.last:
            return False
        if self.tty:
            size = shutil.get_terminal_size()
            lines = [line[:size.columns] for line in frame.splitlines()]
            if len(lines) > size.lines - 1:  # a scrolling terminal would break cursor-home
                hidden = len(lines) - (size.lines - 2)
                lines = lines[:size.lines - 2] + [f"... {hidden} more lines (-o yaml shows all)"]
            self.stream.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in lines)
                              + CLEAR_BELOW)
        else:
            self.stream.write(("\n" if self.last is not None else "") + frame + "\n")
        self.stream.flush()
        self.last = frame
        return True
