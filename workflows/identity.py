"""Every name by which the outside world finds a migration and talks to it: workflow types and
IDs, the query, Updates and signals, and the search attributes. The workflows declare their
handlers with these names and `client/` calls them with the same ones, so a rename is one edit.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CLUSTER_WORKFLOW = "ClusterMigration"
NODE_WORKFLOW = "NodeMigration"
# Between a cluster and its nodes: one per wave, so the cluster's history grows per wave.
WAVE_WORKFLOW = "WaveMigration"
FLEET_WORKFLOW = "FleetMigration"

# Every workflow answers it: the cluster with `Progress`, a node child with its `NodeProgress`,
# a fleet with its `FleetProgress`. The fleet answers the same Updates too (`decide` names a
# cluster there, not a node).
PROGRESS_QUERY = "progress"
# The cluster's bounded views of its progress (workflows/progress_summary.py): a summary whose
# size does not grow with the node count, and node records a page at a time.
PROGRESS_SUMMARY_QUERY = "progress_summary"
NODES_PAGE_QUERY = "nodes_page"
APPROVE_UPDATE = "approve"
PAUSE_UPDATE = "pause"
RESUME_UPDATE = "resume"
DECIDE_UPDATE = "decide"
# Child -> parent: the node is blocked and waits for a decision (its record says why).
NODE_REPORT_SIGNAL = "node_report"
# Parent -> child: the operator's decision for a blocked node.
DECIDE_SIGNAL = "decide"
# Cluster -> its fleet: the cluster's migration halted (and why), or goes on again.
CLUSTER_HALT_SIGNAL = "cluster_halt"

CLUSTER_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigrateCluster")
PHASE_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigratePhase")
# A fleet carries its name and its current stage; the clusters it starts carry both too.
FLEET_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigrateFleet")
STAGE_ATTRIBUTE = SearchAttributeKey.for_keyword("CiliumMigrateStage")
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[str], ...] = (
    CLUSTER_ATTRIBUTE, PHASE_ATTRIBUTE, FLEET_ATTRIBUTE, STAGE_ATTRIBUTE)

_PREFIX = "cilium-migrate/"


def cluster_workflow_id(cluster: str) -> str:
    """One running migration per cluster: the ID is also the lock."""
    return f"{_PREFIX}{cluster}"


def fleet_workflow_id(fleet: str) -> str:
    """Beside the clusters' IDs: a cluster name is a DNS label, so it never holds a '/'. So
    `cilium-migrate approve fleet/NAME stage-2` reaches the fleet too."""
    return f"{_PREFIX}fleet/{fleet}"


def cluster_of(workflow_id: str) -> str:
    """The cluster a migration's workflow ID names."""
    return workflow_id.removeprefix(_PREFIX)


def node_workflow_id(migration_id: str, node: str) -> str:
    """The same whether the cluster or one of its wave workflows starts the node."""
    return f"{migration_id}/node/{node}"


def wave_workflow_id(migration_id: str, wave: int, part: int | None = None) -> str:
    """A wave too large for one WaveMigration runs as several parts, each with its own ID."""
    base = f"{migration_id}/wave/{wave}"
    return base if part is None else f"{base}/part/{part}"
