"""A Helm release left pending by an interrupted operation: whose it is, and how to go on.

Helm stores a release record (a Secret, its default storage) with status `pending-install` or
`pending-upgrade` before it applies anything, and marks it `deployed` or `failed` when it is
done. A helm that dies in between (its worker was killed, its machine rebooted) leaves the record
pending for good, and every later `helm upgrade` fails with "another operation is in progress".

Each helm call of this product labels the record it creates with the operation that runs it
(`OPERATION_LABEL`): a digest of the scheduled step (workflow, run and activity IDs) and the
attempt. Helm writes the labels with the pending record itself, so the mark exists before anything
is applied. A later attempt of the same step then knows a pending record for its own and recovers
the way Helm's documentation advises: it rolls a pending upgrade back to the last deployed
revision and uninstalls a pending first install, then runs its operation again. A pending record
of anyone else stops the step with what to do, because only its owner knows whether it still runs.

Helm copies labels forward (an upgrade's record starts with the last record's labels, a rollback's
with its target's), so a label alone does not prove ownership: the record must also carry a value
its predecessor does not, which only the helm call that wrote it can have caused.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from activities.kubeapi import Kube

OPERATION_LABEL = "cilium-migrate.io/operation"
PENDING = ("pending-install", "pending-upgrade", "pending-rollback")
# A helm given `--timeout T` gives up and marks its record failed by about T after it wrote it;
# a record still pending this much later has no helm behind it.
STALE_AFTER_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class Operation:
    """One scheduled step's helm calls: ``step`` is the same for every attempt of the step."""

    step: str
    attempt: int

    @property
    def label(self) -> str:
        return f"{self.step}.{self.attempt}"

    def wrote(self, label: str | None) -> bool:
        return label is not None and label.startswith(self.step + ".")


def operation_of(workflow_id: str, run_id: str, activity_id: str, attempt: int) -> Operation:
    """Label values allow 63 characters; the IDs are longer, so the step is their digest."""
    digest = hashlib.sha256(f"{workflow_id}\0{run_id}\0{activity_id}".encode()).hexdigest()
    return Operation(step=digest[:24], attempt=attempt)


@dataclass(frozen=True)
class Record:
    """One revision of a release as Helm's Secret storage labels it."""

    revision: int
    status: str
    operation: str | None
    created: datetime | None

    @property
    def pending(self) -> bool:
        return self.status in PENDING


def release_records(kube: Kube, namespace: str, release: str) -> list[Record]:
    """The release's revisions, oldest first, from the labels of Helm's Secrets (metadata only:
    each Secret also holds a compressed copy of the whole chart)."""
    listed = kube.list_metadata(f"/api/v1/namespaces/{namespace}/secrets",
                                labelSelector=f"owner=helm,name={release}")
    records = []
    for item in listed:
        labels = (item.get("metadata") or {}).get("labels") or {}
        try:
            revision = int(labels["version"])
        except (KeyError, ValueError):
            continue  # not a release record Helm wrote
        created = labels.get("createdAt", "")
        records.append(Record(
            revision=revision, status=labels.get("status", ""),
            operation=labels.get(OPERATION_LABEL),
            created=(datetime.fromtimestamp(int(created), UTC) if created.isdigit() else None)))
    return sorted(records, key=lambda r: r.revision)


@dataclass(frozen=True)
class Recovery:
    """What to do before this attempt's helm call."""

    action: str  # "none", "rollback", "uninstall", "wait" or "refuse"
    reason: str = ""
    to_revision: int | None = None  # rollback's target
    wait: timedelta | None = None  # for "wait": until the pending record is stale


def recovery(records: list[Record], operation: Operation, timeout: timedelta, now: datetime,
             writer_gone: bool, release: str, namespace: str) -> Recovery:
    """Decides from the release's records alone. ``writer_gone`` is True when the attempt that
    wrote our pending record is known to be dead (its helm ran on this host and is no longer
    running); otherwise a young record of ours may still have a live helm behind it."""
    if not records or not records[-1].pending:
        return Recovery("none")
    latest = records[-1]
    before = records[-2] if len(records) > 1 else None
    ours = (operation.wrote(latest.operation)
            and (before is None or before.operation != latest.operation))
    if not ours or latest.status == "pending-rollback":
        return Recovery("refuse", _not_ours(latest, records, release, namespace))
    stale_at = (latest.created or now) + timeout + STALE_AFTER_TIMEOUT
    if not writer_gone and now < stale_at:
        return Recovery("wait", f"revision {latest.revision} of release {release} is pending "
                        f"from an earlier attempt of this step, whose helm may still be running",
                        wait=stale_at - now)
    if latest.status == "pending-install":
        return Recovery("uninstall", f"revision {latest.revision} was left pending-install by "
                        "an interrupted attempt of this step")
    deployed = [r.revision for r in records if r.status in ("deployed", "superseded")]
    if not deployed:
        return Recovery("refuse", _not_ours(latest, records, release, namespace))
    return Recovery("rollback", f"revision {latest.revision} was left pending-upgrade by an "
                    f"interrupted attempt of this step", to_revision=deployed[-1])


def _not_ours(latest: Record, records: list[Record], release: str, namespace: str) -> str:
    deployed = [r.revision for r in records if r.status in ("deployed", "superseded")]
    since = f" since {latest.created:%Y-%m-%d %H:%M:%S} UTC" if latest.created else ""
    undo = (f"`helm rollback {release} {deployed[-1]} -n {namespace}`" if deployed
            else f"`helm uninstall {release} -n {namespace}`")
    return (f"Helm release {release} in namespace {namespace} is {latest.status} (revision "
            f"{latest.revision}{since}), and not by this step of this migration. Another helm "
            f"operation may still be running: wait for it, or, once sure none is, run {undo} "
            f"and start the migration again.")


# ---- whether the attempt that wrote a record is still alive ----------------------------------

def writer_gone(last_heartbeat: dict[str, object]) -> bool:
    """True when the previous attempt's helm ran on this host and is no longer running (a helm
    outliving its killed worker finishes on its own and marks the record; this attempt waits for
    that). Unknown is not gone: a helm on another host may still be running."""
    host, pid = last_heartbeat.get("host"), last_heartbeat.get("helm_pid")
    if host != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"helm" not in cmdline.read()
    except OSError:
        return True


def now_utc() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)

