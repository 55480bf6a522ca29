"""What `status` shows, from a Progress and a clock; and how `--watch` redraws."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

from client.status_view import CLEAR_BELOW, CLEAR_LINE, HOME, Screen, render_nodes, render_summary
from plan.contract import (
    CheckResult,
    ConnectivityFigures,
    DrainBlocker,
    FailedRequest,
    InstalledChart,
    PairCounts,
)
from workflows.progress import (
    Approval,
    NodeProgress,
    NodeState,
    NodeStep,
    Phase,
    Progress,
    WaveProgress,
)
from workflows.progress_summary import NodesPage, NodesPageRequest, nodes_page, summarize

START = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def render_progress(progress: Progress, now: datetime, connection: str = "") -> str:
    """The default view as `status` builds it: the summary and the current wave's nodes."""
    summary = summarize(progress)
    wave = summary.current_wave
    wave_nodes = nodes_page(progress, NodesPageRequest(wave=wave.index)) if wave else None
    return render_summary(summary, wave_nodes, now=now, connection=connection)


def progress() -> Progress:
    return Progress(
        cluster="prod-eu", phase=Phase.MIGRATING, started_at=START, paused=True,
        halted="health check after wave 1: flannel DaemonSet not ready",
        waves=[WaveProgress(index=1, kind="canary", nodes=["w1"], state="done",
                            connectivity=ConnectivityFigures(
                                requests=120, rounds=10, by_kind={
                                    "flannel-flannel": PairCounts(requests=80),
                                    "flannel-cilium": PairCounts(requests=40)})),
               WaveProgress(index=2, kind="workers", nodes=["w2", "w3"], zone="b",
                            state="running", connectivity=ConnectivityFigures(
                                requests=30, failed=1, worst_window=1, in_maintenance=2,
                                by_kind={"flannel-cilium": PairCounts(requests=30, failed=1)},
                                failures=[FailedRequest(
                                    at=START, kind="flannel-cilium", source="echo-a",
                                    source_node="w1", source_ip="10.245.0.3", target="echo-b",
                                    target_node="w3", target_ip="10.244.3.4",
                                    error="i/o timeout")]))],
        nodes={"w1": NodeProgress(name="w1", wave=1, state=NodeState.MIGRATED,
                                  step=NodeStep.DONE, started_at=START,
                                  finished_at=START + timedelta(seconds=95)),
               "w2": NodeProgress(name="w2", wave=2, state=NodeState.BLOCKED,
                                  step=NodeStep.DRAIN, started_at=START,
                                  blocker="drain: pod db/db-0 blocked by PDB db/db-pdb",
                                  blockers=[DrainBlocker(pod="db/db-0", pdb="db/db-pdb",
                                                         reason="needs 2 healthy, has 2")]),
               "w3": NodeProgress(name="w3", wave=2)},
        pending_gates=["node/w3"],
        approvals=[Approval(gate="install", approver="alice", reason="ok", at=START,
                            update_id="approve/install/alice",
                            client_identity="mallory@jump-1 cilium-migrate"),
                   Approval(gate="wave-1", approver="bob", at=START + timedelta(minutes=1))])


def test_the_view_says_what_waits_and_the_command_that_unblocks_it() -> None:
    text = render_progress(progress(), now=START + timedelta(minutes=3, seconds=7),
                           connection=" --address t:7233")
    lines = text.splitlines()

    assert lines[0] == "Cluster prod-eu   phase migrating (paused)   elapsed 3m07s"
    assert lines[1] == "Nodes: 1 blocked, 1 migrated, 1 pending"
    assert "Halted: health check after wave 1: flannel DaemonSet not ready" in lines
    assert "  resume with: cilium-migrate resume prod-eu --address t:7233" in lines
    assert ("  node/w3          cilium-migrate approve prod-eu node/w3 --reason '...' "
            "--address t:7233") in lines
    assert "  pod db/db-0: needs 2 healthy, has 2 (PDB db/db-pdb)" in lines
    assert "  decide with: cilium-migrate decide prod-eu w2 retry|rollback|skip --address " \
           "t:7233" in lines
    # Waves by count, not by name, with what the monitor counted while each moved; the rows
    # are the current wave's nodes.
    wave_rows = [line.split() for line in lines if line[:1] in "12" and "  " in line]
    assert wave_rows == [["1", "canary", "-", "done", "1", "120", "0", "0"],
                         ["2", "workers", "b", "running", "2", "30", "1", "1"]]
    assert ("Connectivity: 150 requests, 1 failed, worst window 1 failed (flannel-flannel "
            "80/0, flannel-cilium 70/1 requests/failed); not counted: 2 in maintenance") in lines
    assert ("  failed: echo-a (w1, 10.245.0.3) -> echo-b (w3, 10.244.3.4) [flannel-cilium] "
            "at 10:00:00: i/o timeout") in lines
    assert "Current wave 2 (workers, zone b): running; 1 blocked, 1 pending" in lines
    node_rows = [line.split()[:5] for line in lines if line.startswith("w")]
    assert node_rows == [["w2", "2", "blocked", "drain", "3m07s"],
                         ["w3", "2", "pending", "-", "-"]]
    # The claimed approver beside the client that sent it (unknown: "-"); they may differ.
    approvals = lines[lines.index("Approvals:") + 1:]
    assert approvals == [
        "  GATE     APPROVER  CLIENT                         APPROVED AT          REASON",
        "  install  alice     mallory@jump-1 cilium-migrate  2025-03-01 10:00:00  ok",
        "  wave-1   bob       -                              2025-03-01 10:01:00"]


def test_the_view_names_the_installed_chart_once_helm_ran() -> None:
    digest = "sha256:" + "ab" * 32
    before = render_progress(progress(), now=START)
    assert not [line for line in before.splitlines() if line.startswith("Chart ")]

    source = "oci://registry.example/charts/cilium"
    installed = progress().model_copy(update={"chart": InstalledChart(
        name="cilium", version="1.18.4", digest=digest, source=source)})
    lines = render_progress(installed, now=START).splitlines()
    assert lines[2] == f"Chart cilium 1.18.4 {digest} from {source}"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_redraws_in_place_only_when_the_frame_changed() -> None:
    terminal = Terminal()
    with Screen(terminal) as screen:
        assert screen.show("a\nb")
        assert not screen.show("a\nb")
        assert screen.show("a\nc")
    written = terminal.getvalue()

    assert written.count("\x1b[2J") == 1  # cleared once, on entry; never between frames
    frame = HOME + f"a{CLEAR_LINE}\nc{CLEAR_LINE}\n" + CLEAR_BELOW
    assert written.endswith(frame + "\x1b[?25h")
    assert written.count(HOME) == 2


def test_watch_into_a_pipe_appends_changed_frames_without_control_codes() -> None:
    pipe = io.StringIO()
    with Screen(pipe) as screen:
        screen.show("one")
        screen.show("one")
        screen.show("two")
    assert pipe.getvalue() == "one\n\ntwo\n"


def test_verify_checks_show_their_outcome_and_what_was_not_checked() -> None:
    view = progress()
    w3, w2 = view.nodes["w3"], view.nodes["w2"]
    w3.verify = [CheckResult(name="peer-flannel", outcome="passed", detail="reached a"),
                 CheckResult(name="peer-cilium", outcome="not-checked",
                             detail="no Ready pod on cilium nodes to probe yet")]
    w2.step, w2.blockers = NodeStep.VERIFY, []
    w2.verify = [CheckResult(name="api-server", outcome="failed", detail="/healthz did not answer"),
                 CheckResult(name="peer-cilium", outcome="not-checked", detail="none yet")]
    lines = render_progress(view, now=START).splitlines()

    assert "  check api-server: FAILED /healthz did not answer" in lines
    assert "  check peer-cilium: not checked none yet" in lines
    at = lines.index("Verify checks not made (nothing to check against yet):")
    assert lines[at + 1] == "  w3 peer-cilium: no Ready pod on cilium nodes to probe yet"
    assert not any("peer-flannel" in line for line in lines)  # passes are not news


def test_past_the_cap_the_view_says_how_many_more_and_how_to_list_them() -> None:
    view = progress()
    view.waves[0].nodes = [f"d{i:03d}" for i in range(120)]
    for name in view.waves[0].nodes:
        view.nodes[name] = NodeProgress(name=name, wave=1, state=NodeState.SKIPPED,
                                        error="skipped by alice")
    lines = render_progress(view, now=START).splitlines()

    assert "Node w2 waits for a decision: drain: pod db/db-0 blocked by PDB db/db-pdb" in lines
    assert "Node d000 (wave 1) skipped: skipped by alice" in lines
    assert sum(line.startswith("Node ") for line in lines) == 50  # the blocked one first
    assert ("  ... 71 more nodes need attention: cilium-migrate status prod-eu --nodes "
            "blocked,failed,rolling-back,rolled-back,skipped") in lines


def test_a_node_listing_says_which_slice_of_how_many_it_shows() -> None:
    summary = summarize(progress())
    page = NodesPage(total=3, offset=1, limit=1, nodes=[progress().nodes["w2"]])

    lines = render_nodes(summary, page, "in all", now=START).splitlines()
    empty = render_nodes(summary, NodesPage(total=0, offset=0, limit=10, nodes=[]),
                         "failed", now=START)

    assert [line.split()[:3] for line in lines if line.startswith("w")] == [
        ["w2", "2", "blocked"]]
    assert lines[-1] == "Nodes in all: 2-2 of 3"
    assert empty.splitlines()[-1] == "No nodes failed (0 in all)."


def test_the_demo_follows_the_summary_that_status_json_prints() -> None:
    """`make demo` reads `status -o json`, which prints the bounded summary (issue 13)."""
    from client.demo_commands import pending_gates, progress_line

    printed = json.loads(summarize(progress()).model_dump_json())
    assert progress_line(printed) == "phase migrating: 1 migrated, 1 blocked, 1 pending; " \
        "wave 2 running"
    assert pending_gates(printed) == ["node/w3"]
