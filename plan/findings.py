"""Findings: what preflight has to say about a spec and a cluster, and what may proceed.

A blocking finding stops the migration; a warning stops it too until the operator accepts it by
listing its id in the spec's `acknowledge` (or through an approval); an info finding stops
nothing. Ids are stable strings, so an acknowledgement written today still means the same thing
tomorrow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

# "info" tells the operator something worth knowing that needs no action or acknowledgement.
Severity = Literal["blocking", "warning", "info"]


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # the rule's id, e.g. "pod-cidr-overlaps-service"
    severity: Severity
    message: str  # what is wrong, with the names and numbers involved
    remedy: str  # what the operator can do about it
    subject: str | None = None  # the node, PDB or key concerned, when one rule finds several
    acknowledged: bool = False

    def __str__(self) -> str:
        mark = " (acknowledged)" if self.acknowledged else ""
        return f"[{self.severity}] {self.id}{mark}: {self.message} Remedy: {self.remedy}"


def acknowledge(findings: Iterable[Finding], ids: Iterable[str]) -> list[Finding]:
    """Mark warnings whose id is in `ids` as acknowledged; blocking findings cannot be."""
    accepted = set(ids)
    return [
        finding.model_copy(update={"acknowledged": True})
        if finding.severity == "warning" and finding.id in accepted
        else finding
        for finding in findings
    ]


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """Findings that stop the migration whatever the operator says."""
    return [finding for finding in findings if finding.severity == "blocking"]


def unacknowledged(findings: Iterable[Finding]) -> list[Finding]:
    """Warnings nobody has accepted yet (blocking findings are not included)."""
    return [
        finding
        for finding in findings
        if finding.severity == "warning" and not finding.acknowledged
    ]
