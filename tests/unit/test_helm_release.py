"""Deciding what to do with a pending Helm release: ours or not, alive or stale, and how to
recover it. The records are what Helm's Secret storage labels; the sandbox test in
tests/integration/test_helm_recovery.py makes real ones."""

from __future__ import annotations

import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from activities.helm_release import (
    Operation,
    Record,
    Recovery,
    operation_of,
    recovery,
    writer_gone,
)
from tests.helpers import wait_for

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=15)
STEP = operation_of("cilium-migrate-prod", "run-1", "7", attempt=1)
NEXT = Operation(step=STEP.step, attempt=2)


def record(revision: int, status: str, operation: str | None = None,
           age: timedelta = timedelta(hours=1)) -> Record:
    return Record(revision=revision, status=status, operation=operation, created=NOW - age)


def decide(records: list[Record], gone: bool = False,
           operation: Operation = NEXT) -> Recovery:
    return recovery(records, operation, TIMEOUT, NOW, gone, "cilium", "kube-system")


def test_the_operation_label_is_a_valid_label_value_and_the_same_for_every_attempt() -> None:
    long_id = "cilium-migrate-" + "x" * 200
    first, second = (operation_of(long_id, "r", "12", attempt=a) for a in (1, 2))
    assert first.step == second.step and first.label != second.label
    assert len(second.label) <= 63 and second.label.replace(".", "").isalnum()
    assert operation_of(long_id, "r", "13", attempt=1).step != first.step
    assert operation_of(long_id, "other-run", "12", attempt=1).step != first.step


def test_nothing_to_do_without_a_release_or_when_the_last_record_is_settled() -> None:
    assert decide([]).action == "none"
    assert decide([record(1, "deployed", STEP.label)]).action == "none"
    assert decide([record(1, "superseded"), record(2, "failed", STEP.label)]).action == "none"


def test_our_stale_pending_upgrade_rolls_back_to_the_last_deployed_revision() -> None:
    records = [record(1, "superseded"), record(2, "deployed", "someone.1"),
               record(3, "pending-upgrade", STEP.label)]
    decision = decide(records)
    assert (decision.action, decision.to_revision) == ("rollback", 2)


def test_our_stale_pending_install_is_uninstalled() -> None:
    assert decide([record(1, "pending-install", STEP.label)]).action == "uninstall"


def test_a_young_pending_record_of_ours_waits_until_its_helm_would_have_given_up() -> None:
    young = [record(1, "deployed"), record(2, "pending-upgrade", STEP.label,
                                                   age=timedelta(minutes=5))]
    decision = decide(young)
    assert decision.action == "wait"
    assert decision.wait == TIMEOUT + timedelta(seconds=60) - timedelta(minutes=5)
    # ... unless its helm is known to be gone: then at once.
    assert decide(young, gone=True).action == "rollback"


def test_a_pending_record_of_someone_else_is_refused_with_what_to_do() -> None:
    decision = decide([record(4, "deployed", None),
                       record(5, "pending-upgrade", None, age=timedelta(days=2))], gone=True)
    assert decision.action == "refuse"
    assert "Helm release cilium in namespace kube-system is pending-upgrade" in decision.reason
    assert "revision 5" in decision.reason
    assert "`helm rollback cilium 4 -n kube-system`" in decision.reason
    other_step = operation_of("cilium-migrate-prod", "run-1", "8", attempt=1)
    assert decide([record(1, "pending-install", other_step.label)]).action == "refuse"
    assert "`helm uninstall cilium -n kube-system`" in decide(
        [record(1, "pending-install", other_step.label)]).reason


def test_a_label_helm_copied_forward_from_our_deployed_record_is_not_ownership() -> None:
    # We deployed revision 2; someone's later upgrade started from it and copied our label.
    records = [record(2, "deployed", STEP.label), record(3, "pending-upgrade", STEP.label)]
    assert decide(records, gone=True).action == "refuse"
    # Our own retry after revision 2 writes its own attempt's value, so it is ours.
    ours = [record(2, "deployed", STEP.label), record(3, "pending-upgrade", NEXT.label)]
    assert decide(ours, gone=True, operation=Operation(STEP.step, 3)).action == "rollback"


def test_a_pending_rollback_is_never_taken_for_ours() -> None:
    records = [record(1, "deployed", "x.1"), record(2, "pending-rollback", STEP.label)]
    assert decide(records, gone=True).action == "refuse"


def test_the_writer_is_gone_only_when_its_helm_ran_here_and_no_longer_runs(
        tmp_path: Path) -> None:
    host = socket.gethostname()
    helm = tmp_path / "helm"
    helm.symlink_to(shutil.which("sleep") or "/bin/sleep")
    with subprocess.Popen([str(helm), "60"]) as running:
        try:
            wait_for(lambda: Path(f"/proc/{running.pid}/cmdline").read_bytes().startswith(
                bytes(helm)), what="the fake helm to start")  # exec'd, not a forked pytest
            assert not writer_gone({"host": host, "helm_pid": running.pid})
            assert not writer_gone({"host": "another-host", "helm_pid": running.pid})
        finally:
            running.kill()
    assert writer_gone({"host": host, "helm_pid": running.pid})
    with subprocess.Popen(["sleep", "60"]) as other:  # the PID now belongs to something else
        try:
            assert writer_gone({"host": host, "helm_pid": other.pid})
        finally:
            other.kill()
    assert not writer_gone({})
