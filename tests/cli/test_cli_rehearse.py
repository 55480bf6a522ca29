"""`rehearse` refuses what it cannot rehearse before it starts anything (no sandbox, no
server), with one `error:` line and exit 1; and its report reads as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from client import exit_codes
from client.cli import main
from client.plan_commands import read_spec
from client.rehearse_commands import render, spec_for_rehearsal
from plan.rehearsal import BlockerMet, RehearsalReport, WaveReport


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == exit_codes.INVALID_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: " in err
    return err


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "migration.yaml"
    path.write_text("cluster: {name: prod-eu, kubeconfigContext: prod-eu}\n")
    return path


def test_a_snapshot_with_cluster_flags_is_refused(spec: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(capsys, "rehearse", "-f", str(spec), "--snapshot", str(tmp_path / "s.yaml"),
                  "--context", "prod-eu", "--dir", str(tmp_path / "run"))
    assert "--snapshot replaces reading the cluster" in err
    assert not (tmp_path / "run").exists()


def test_a_damaged_snapshot_file_is_refused_with_where_and_what(
        spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "snapshot.yaml"
    damaged.write_text("version: 1\ncluster: prod-eu\ntaken_at: 2026-11-28T07:00:00Z\n"
                       "nodes: [{name: w-1, capacty: {}}]\n")
    err = refusal(capsys, "rehearse", "-f", str(spec), "--snapshot", str(damaged),
                  "--dir", str(tmp_path / "run"))
    assert f"{damaged}: invalid cluster snapshot" in err and "nodes[0].capacty" in err
    assert not (tmp_path / "run").exists()


def test_a_missing_snapshot_file_is_refused(spec: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(capsys, "rehearse", "-f", str(spec), "--snapshot", str(tmp_path / "none"))
    assert "cannot read snapshot" in err


def test_an_in_cluster_spec_is_refused(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "migration.yaml"
    spec.write_text("cluster: {name: prod-eu, inCluster: true}\n")
    err = refusal(capsys, "rehearse", "-f", str(spec), "--snapshot", str(spec))
    assert "cluster.inCluster" in err


def test_the_table_shows_the_verdict_waves_blockers_and_notes() -> None:
    report = RehearsalReport(
        cluster="prod-eu", snapshot_taken_at=datetime(2026, 11, 28, 7, tzinfo=UTC), nodes=6,
        phase="cancelled", waves=[WaveReport(index=1, kind="canary", zone="a", nodes=["w-1"],
                                             states={"skipped": 1},
                                             measured=timedelta(seconds=40),
                                             predicted=timedelta(minutes=4, seconds=5))],
        blockers=[BlockerMet(kind="pdb", wave=1, node="w-1", object="shop/db-pdb",
                             message="draining w-1: pod shop/db-0 blocked")],
        verdict="no-go", reasons=["pdb: draining w-1: pod shop/db-0 blocked"],
        notes=["containers run no program"])
    text = render(report)
    assert text.startswith("Rehearsal of prod-eu (snapshot of 2026-11-28 07:00 UTC, 6 nodes): "
                           "NO-GO")
    assert "canary" in text and "0m40s" in text and "4m05s" in text
    assert "  wave 1  pdb           shop/db-pdb: draining w-1: pod shop/db-0 blocked" in text
    assert "  - containers run no program" in text


def test_the_spec_runs_as_written_unless_the_rehearsal_must_change_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("cluster: {name: prod-eu}\napprovals: {approvers: [alice, rehearsal]}\n")
    assert spec_for_rehearsal(read_spec(plain), plain, tmp_path) == (plain, [])

    guarded = tmp_path / "guarded.yaml"
    guarded.write_text("cluster: {name: prod-eu}\napprovals: {approvers: [alice]}\n"
                       "reboot: {strategy: command, command: [ssh, '{node}', reboot], "
                       "timeout: 7m}\n")
    path, notes = spec_for_rehearsal(read_spec(guarded), guarded, tmp_path)
    rehearsed = read_spec(path)
    assert rehearsed.approvals.approvers == ["alice", "rehearsal"]
    assert rehearsed.reboot.strategy == "node-shell" and rehearsed.reboot.command is None
    assert rehearsed.reboot.timeout == timedelta(minutes=7)
    assert len(notes) == 3 and "must not reach the cluster's" in notes[1]
