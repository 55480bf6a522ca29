"""How a migration looks on a terminal: the `status` view (from the run's bounded summary and a
page of node records), the `list` table, and a screen that redraws in place for `status --watch`.

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
from plan.contract import ConnectivityFigures
from workflows.progress import Approval, NodeProgress, NodeState
from workflows.progress_summary import ATTENTION_STATES, NodesPage, ProgressSummary, WaveRun

# How a verify check's outcome reads; "not checked" is neither a pass nor a failure.
OUTCOME_WORDS = {"passed": "ok", "failed": "FAILED", "not-checked": "not checked"}
# ANSI: cursor home, clear to end of line, clear to end of screen, hide and show the cursor.
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
# Blocked nodes shown with their pods, checks and decide command; the others get a line each,
# so that the view of a run with many blocked nodes still fits a screen or two.
DETAILED_NODES = 10
SHOWN_APPROVALS = 10
SHOWN_FAILURES = 5  # the current wave's latest failed requests; -o yaml shows more


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


def render_summary(summary: ProgressSummary, wave_nodes: NodesPage | None = None,
                   now: datetime | None = None, connection: str = "") -> str:
    """The status view: the run's summary, and the current wave's nodes when given.
    ``connection`` repeats the user's connection flags in suggestions."""
    now = now or datetime.now(UTC)
    cluster = shlex.quote(summary.cluster)
    state = summary.phase.value + (" (paused)" if summary.paused else "")
    out = [f"Cluster {summary.cluster}   phase {state}   elapsed "
           f"{elapsed(summary.started_at, summary.finished_at, now)}"]
    if summary.counts:
        out.append("Nodes: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())))
    if summary.chart:
        chart = summary.chart
        out.append(f"Chart {chart.name} {chart.version} {chart.digest} from {chart.source}")
    if summary.echo_mesh:
        mesh = summary.echo_mesh
        out.append(f"Echo mesh {mesh.namespace} ({mesh.image}): " + (
            "removed" if summary.echo_mesh_removed
            else f"{mesh.ready}/{mesh.desired} pods Ready when deployed"))
    if summary.connectivity:
        out.append("Connectivity: " + connectivity_line(summary.connectivity))
    if summary.error:
        out += ["", f"Error: {summary.error}"]
    if summary.halted:
        out += ["", f"Halted: {summary.halted}",
                f"  resume with: cilium-migrate resume {cluster}{connection}"]
    if summary.pending_gates.total:
        out += ["", "Waiting for approval:"]
        out += [f"  {gate:<16} {approve_command(summary.cluster, gate, connection)}"
                for gate in summary.pending_gates.items]
        out += _more(summary.pending_gates.total, len(summary.pending_gates.items), "gates")
    for shown, node in enumerate(summary.attention.items):
        out += ([""] if shown <= DETAILED_NODES else []) + _attention(
            node, cluster, connection, detailed=shown < DETAILED_NODES)
    states = ",".join(s.value for s in ATTENTION_STATES)
    out += _more(summary.attention.total, len(summary.attention.items), "nodes need attention",
                 f"cilium-migrate status {cluster} --nodes {states}{connection}")
    if summary.waves:
        out += ["", table([[_waves(r), r.kind, r.zone or "-", r.state, str(r.nodes),
                            *_request_cells(r.connectivity)] for r in summary.waves],
                          ["wave", "kind", "zone", "state", "nodes", "requests", "failed",
                           "worst window"])]
    current = summary.current_wave
    if current is not None:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(current.counts.items()))
        out += ["", f"Current wave {current.index} ({current.kind}"
                + (f", zone {current.zone}" if current.zone else "")
                + f"): {current.state}; {counts}"]
        if current.connectivity:
            out.append("  connectivity: " + connectivity_line(current.connectivity))
            out += [f"  failed: {f.source} ({f.source_node}, {f.source_ip}) -> {f.target} "
                    f"({f.target_node}, {f.target_ip}) [{f.kind}] at {f.at:%H:%M:%S}: {f.error}"
                    for f in current.connectivity.failures[-SHOWN_FAILURES:]]
    if wave_nodes is not None and wave_nodes.nodes:
        out += _node_table(wave_nodes.nodes, now)
        out += _more(wave_nodes.total, len(wave_nodes.nodes), "nodes in this wave",
                     f"cilium-migrate status {cluster} --wave {current.index if current else 0}"
                     f"{connection}")
        unchecked = [f"  {n.name} {c.name}: {c.detail}".rstrip() for n in wave_nodes.nodes
                     if n.state is not NodeState.BLOCKED
                     for c in n.verify if c.outcome == "not-checked"]
        if unchecked:
            out += ["", "Verify checks not made (nothing to check against yet):", *unchecked]
    if summary.not_migrated.total:
        out += ["", "Not migrated yet (finalize waits for them):"]
        out += [f"  {node}: {why}" for node, why in summary.not_migrated.items]
        out += _more(summary.not_migrated.total, len(summary.not_migrated.items), "nodes")
    if summary.excluded_nodes.total:
        more = summary.excluded_nodes.total - len(summary.excluded_nodes.items)
        out.append(f"excluded: {', '.join(summary.excluded_nodes.items)}"
                   + (f" and {more} more" if more else ""))
    warnings = [f for f in summary.findings.items if f.severity != "info"]
    if warnings:
        out += ["", "Findings:"] + [f"  {f.severity}: {f.id}: {f.message}" +
                                    (" (acknowledged)" if f.acknowledged else "")
                                    for f in warnings]
        out += _more(summary.findings.total, len(summary.findings.items), "findings")
    if summary.approvals.total:
        latest = summary.approvals.items[-SHOWN_APPROVALS:]
        earlier = summary.approvals.total - len(latest)
        out += ["", "Approvals:" + (f" (the latest; {earlier} earlier, -o yaml shows "
                                    f"{len(summary.approvals.items)})" if earlier else "")]
        out += _indented(_approval_table(latest))
    return "\n".join(out)


def render_nodes(summary: ProgressSummary, page: NodesPage, what: str,
                 now: datetime | None = None) -> str:
    """`status --nodes/--wave`: the header line and the node records ``page`` holds."""
    now = now or datetime.now(UTC)
    state = summary.phase.value + (" (paused)" if summary.paused else "")
    out = [f"Cluster {summary.cluster}   phase {state}   elapsed "
           f"{elapsed(summary.started_at, summary.finished_at, now)}"]
    if not page.nodes:
        out += ["", f"No nodes {what}" + (f" from offset {page.offset}" if page.offset else "")
                + f" ({page.total} in all)."]
        return "\n".join(out)
    out += _node_table(page.nodes, now)
    out += ["", f"Nodes {what}: {page.offset + 1}-{page.offset + len(page.nodes)} of "
            f"{page.total}"]
    return "\n".join(out)


def _attention(node: NodeProgress, cluster: str, connection: str, detailed: bool
               ) -> list[str]:
    if node.state is not NodeState.BLOCKED or not detailed:
        why = node.error or node.blocker or ""
        return [f"Node {node.name} (wave {node.wave}) {node.state.value}"
                + (f": {why}" if why else "")]
    out = [f"Node {node.name} waits for a decision: {node.blocker or '-'}"]
    out += [f"  pod {b.pod}: {b.reason}" + (f" (PDB {b.pdb})" if b.pdb else "")
            for b in node.blockers]
    out += [f"  check {c.name}: {OUTCOME_WORDS[c.outcome]} {c.detail}".rstrip()
            for c in node.verify]
    out.append(f"  decide with: cilium-migrate decide {cluster} "
               f"{shlex.quote(node.name)} retry|rollback|skip{connection}")
    return out


def _approval_table(approvals: list[Approval]) -> str:
    """The approver as claimed (`--as`) beside the identity the sending client declared:
    two self-declared names, which agree only if nobody lied (README: Who may approve)."""
    return table([[a.gate, a.approver, a.client_identity or "-", f"{a.at:%Y-%m-%d %H:%M:%S}",
                   a.reason] for a in approvals],
                 ["gate", "approver", "client", "approved at", "reason"])


def _indented(text: str) -> list[str]:
    return [f"  {line}".rstrip() for line in text.splitlines()]


def _node_table(nodes: Iterable[NodeProgress], now: datetime) -> list[str]:
    return ["", table([_node_row(n, now) for n in nodes],
                      ["node", "wave", "state", "step", "elapsed", "blocker"])]


def _more(total: int, shown: int, what: str, command: str = "") -> list[str]:
    if total <= shown:
        return []
    return [f"  ... {total - shown} more {what}" + (f": {command}" if command else "")]


def connectivity_line(figures: ConnectivityFigures) -> str:
    """What the monitor counted, in one line: requests, failures, worst window, per pair kind,
    and what it did not count."""
    if figures.unavailable and not figures.requests:
        return f"not measured: {figures.unavailable}"
    kinds = ", ".join(f"{kind} {c.requests}/{c.failed}" for kind, c in figures.by_kind.items())
    line = (f"{figures.requests} requests, {figures.failed} failed, worst window "
            f"{figures.worst_window} failed" + (f" ({kinds} requests/failed)" if kinds else ""))
    aside = [f"{n} {what}" for n, what in ((figures.in_maintenance, "in maintenance"),
                                            (figures.unreachable, "not delivered"))
             if n]
    return line + (f"; not counted: {', '.join(aside)}" if aside else "")


def _request_cells(figures: ConnectivityFigures | None) -> list[str]:
    if figures is None:
        return ["-", "-", "-"]
    if figures.unavailable and not figures.requests:
        return ["n/a", "n/a", "n/a"]
    return [str(figures.requests), str(figures.failed), str(figures.worst_window)]


def _waves(run: WaveRun) -> str:
    return str(run.first) if run.first == run.last else f"{run.first}-{run.last}"


def _node_row(node: NodeProgress, now: datetime) -> list[str]:
    blocker = node.blocker or node.error or ""
    return [node.name, str(node.wave), node.state.value,
            node.step.value if node.step else "-",
            elapsed(node.started_at, node.finished_at, now) if node.started_at else "-",
            blocker if len(blocker) <= 80 else blocker[:77] + "..."]


def render_list(rows: list[list[str]]) -> str:
    if not rows:
        return "No migrations."
    return table(rows, ["cluster", "status", "phase", "started", "nodes", "waiting", "fleet",
                        "workflow"])


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
                lines = lines[:size.lines - 2] + [f"... {hidden} more lines (without --watch: all)"]
            self.stream.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in lines)
                              + CLEAR_BELOW)
        else:
            self.stream.write(("\n" if self.last is not None else "") + frame + "\n")
        self.stream.flush()
        self.last = frame
        return True
