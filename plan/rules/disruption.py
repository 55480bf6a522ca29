"""Rules about what holds up a drain: PodDisruptionBudgets, and pods the drain refuses."""

from __future__ import annotations

from collections.abc import Iterator

from plan.facts import PodDisruptionBudgetFacts, PodFacts
from plan.rules.context import Issue, RuleContext, some_of


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


def drain_refuses_empty_dir_pods(ctx: RuleContext) -> Iterator[Issue]:
    """Pods with emptyDir data stop their node's drain unless drain.deleteEmptyDirData is set.

    Only pods on nodes the migration drains count; one finding names them all."""
    if ctx.spec.drain.delete_empty_dir_data:
        return
    pods = [pod for pod in _pods_to_drain(ctx) if pod.empty_dirs]
    if pods:
        named = [f"{pod} on {pod.node} ({', '.join(pod.empty_dirs)})" for pod in pods]
        yield Issue(
            f"{len(pods)} pod(s) on nodes to migrate keep data in emptyDir volumes, which an "
            f"eviction deletes: {some_of(named, 10)}. With drain.deleteEmptyDirData false (as "
            "`kubectl drain` without --delete-emptydir-data) their node's drain stops there and "
            "waits for a decision.",
            "Set drain.deleteEmptyDirData: true if that data may be lost, or move the pods off "
            "those nodes (or onto storage that survives) before migrating; or acknowledge and "
            "decide at each drain.",
        )


def drain_refuses_unmanaged_pods(ctx: RuleContext) -> Iterator[Issue]:
    """Pods no controller owns stop their node's drain unless drain.evictUnmanagedPods is set.

    Only pods on nodes the migration drains count; one finding names them all."""
    if ctx.spec.drain.evict_unmanaged_pods:
        return
    pods = [pod for pod in _pods_to_drain(ctx) if pod.unmanaged]
    if pods:
        named = [f"{pod} on {pod.node}" for pod in pods]
        yield Issue(
            f"{len(pods)} pod(s) on nodes to migrate have no controller, so nothing would "
            f"re-create them after an eviction: {some_of(named, 10)}. With "
            "drain.evictUnmanagedPods false (as `kubectl drain` without --force) their node's "
            "drain stops there and waits for a decision.",
            "Set drain.evictUnmanagedPods: true to evict them anyway (they are gone for good), "
            "or run them under a controller (a Deployment, say) or move them off those nodes "
            "before migrating; or acknowledge and decide at each drain.",
        )


def _pods_to_drain(ctx: RuleContext) -> list[PodFacts]:
    """Recorded pods on the nodes the migration drains, by namespace and name."""
    excluded = set(ctx.spec.rollout.exclude_nodes)
    return sorted((pod for pod in ctx.facts.pods_drain_may_refuse if pod.node not in excluded),
                  key=lambda pod: (pod.namespace, pod.name))


def _never_allows(pdb: PodDisruptionBudgetFacts) -> bool:
    return pdb.expected_pods > 0 and pdb.desired_healthy >= pdb.expected_pods


def _sorted(ctx: RuleContext) -> list[PodDisruptionBudgetFacts]:
    return sorted(ctx.facts.pdbs, key=lambda pdb: (pdb.namespace, pdb.name))
