"""Rules about nodes and the wave plan: is there somewhere for pods (and us) to go?"""

from __future__ import annotations

from collections.abc import Iterator

from plan.facts import MIGRATION_LABEL
from plan.rules.context import Issue, RuleContext
from plan.waves import Wave, wave_budget


def too_few_schedulable_nodes(ctx: RuleContext) -> Iterator[Issue]:
    """At least two nodes must accept pods, or a drain has nowhere to send them."""
    ready = [node.name for node in ctx.nodes if node.accepts_pods]
    if len(ready) < 2:
        yield Issue(
            f"Only {len(ready)} node(s) accept pods ({', '.join(ready) or 'none'}); draining a "
            "node needs another one to take its pods.",
            "Add a node or uncordon one before migrating.",
        )


def wave_plan_invalid(ctx: RuleContext) -> Iterator[Issue]:
    """The rollout section must fit the cluster (node names exist, no control plane first)."""
    if ctx.plan_error is not None:
        yield Issue(ctx.plan_error + ".", "Fix the node names in the spec's rollout section.")


def worker_node_stranded(ctx: RuleContext) -> Iterator[Issue]:
    """The node running our worker must leave another node for the worker to move to."""
    worker = ctx.facts.worker_node
    wave = _wave_of(ctx.waves, worker) if worker else None
    if wave is not None and not _room_outside(ctx, wave):
        yield Issue(
            f"Wave {wave.index} drains {worker}, where the migration's own worker runs, and "
            "leaves no other node that accepts pods: the worker could not be rescheduled and "
            "the migration would stall.",
            "Make more nodes schedulable, lower rollout.maxUnavailable, or run the worker "
            "outside the cluster.",
            worker,
        )


def wave_leaves_no_room(ctx: RuleContext) -> Iterator[Issue]:
    """Every wave must leave at least one node outside it that accepts pods."""
    worker = ctx.facts.worker_node
    for wave in ctx.waves:
        if worker in wave.nodes:
            continue  # worker_node_stranded reports this wave with the sharper reason
        if not _room_outside(ctx, wave):
            yield Issue(
                f"Wave {wave.index} ({', '.join(wave.nodes)}) leaves no other node that accepts "
                "pods, so its drain cannot succeed.",
                "Lower rollout.maxUnavailable or make more nodes schedulable.",
                f"wave {wave.index}",
            )


def canary_reduced_to_budget(ctx: RuleContext) -> Iterator[Issue]:
    """A canary larger than maxUnavailable is cut down to it."""
    workers = [
        node
        for node in ctx.nodes
        if not node.control_plane and node.name not in ctx.spec.rollout.exclude_nodes
    ]
    budget = wave_budget(ctx.spec, len(workers))
    if workers and ctx.spec.rollout.canary_size > budget:
        yield Issue(
            f"rollout.canarySize {ctx.spec.rollout.canary_size} exceeds maxUnavailable "
            f"({budget} node(s) here); the canary wave will have {budget}.",
            "Raise rollout.maxUnavailable or lower rollout.canarySize, or acknowledge.",
        )


def no_worker_for_canary(ctx: RuleContext) -> Iterator[Issue]:
    """Without eligible workers, the first node to migrate is a control-plane node."""
    if ctx.waves and ctx.waves[0].kind == "control-plane":
        yield Issue(
            "No worker node is eligible, so the first wave migrates control-plane node "
            f"{ctx.waves[0].nodes[0]}.",
            "Add a worker node, or acknowledge.",
        )


def node_not_ready(ctx: RuleContext) -> Iterator[Issue]:
    """A NotReady node is likely to fail its reboot and verify steps."""
    excluded = set(ctx.spec.rollout.exclude_nodes)
    for node in ctx.nodes:
        if not node.ready and node.name not in excluded:
            yield Issue(
                f"Node {node.name} is NotReady; its migration will probably fail to verify.",
                "Repair it, add it to rollout.excludeNodes, or acknowledge.",
                node.name,
            )


def node_already_labelled(ctx: RuleContext) -> Iterator[Issue]:
    """A node with the migration label switches to Cilium whenever its agent restarts."""
    for node in ctx.nodes:
        if MIGRATION_LABEL in node.labels:
            yield Issue(
                f"Node {node.name} already has label {MIGRATION_LABEL}="
                f"{node.labels[MIGRATION_LABEL]!r} (an earlier run?); its Cilium agent will take "
                "over as soon as it restarts, before the node is drained.",
                "Acknowledge if an earlier run of this tool migrated it; otherwise remove the "
                "label.",
                node.name,
            )


def _wave_of(waves: list[Wave], node: str) -> Wave | None:
    return next((wave for wave in waves if node in wave.nodes), None)


def _room_outside(ctx: RuleContext, wave: Wave) -> bool:
    return any(node.accepts_pods and node.name not in wave.nodes for node in ctx.nodes)
