"""Rules about PodDisruptionBudgets: the usual reason a drain hangs."""

from __future__ import annotations

from collections.abc import Iterator

from plan.facts import PodDisruptionBudgetFacts
from plan.rules.context import Issue, RuleContext


def pdb_never_allows_eviction(ctx: RuleContext) -> Iterator[Issue]:
    """A PDB that needs every pod healthy (maxUnavailable 0, minAvailable = replicas) blocks
    every drain of a node running one of its pods."""
    for pdb in _sorted(ctx):
        if _never_allows(pdb):
            yield Issue(
                f"PodDisruptionBudget {pdb} ({pdb.selector or 'no selector shown'}) needs "
                f"{pdb.desired_healthy} healthy of {pdb.expected_pods} pods, so no pod it covers "
                "can ever be evicted.",
                "Relax the budget (maxUnavailable >= 1 or minAvailable below the replica count) "
                "or scale the workload up for the migration.",
                str(pdb),
            )


def pdb_allows_no_disruption_now(ctx: RuleContext) -> Iterator[Issue]:
    """A PDB with no disruptions allowed right now will hold up drains until pods recover."""
    for pdb in _sorted(ctx):
        if pdb.disruptions_allowed == 0 and not _never_allows(pdb):
            yield Issue(
                f"PodDisruptionBudget {pdb} allows no disruption now: {pdb.current_healthy} "
                f"healthy, {pdb.desired_healthy} needed.",
                "Bring its pods back to health, or acknowledge and expect drains to wait.",
                str(pdb),
            )


def _never_allows(pdb: PodDisruptionBudgetFacts) -> bool:
    return pdb.expected_pods > 0 and pdb.desired_healthy >= pdb.expected_pods


def _sorted(ctx: RuleContext) -> list[PodDisruptionBudgetFacts]:
    return sorted(ctx.facts.pdbs, key=lambda pdb: (pdb.namespace, pdb.name))
