"""How each node step behaves, decided once from the spec: the policies a node's migration
carries to its steps unchanged.

The spec is what the operator writes (camelCase, durations, choices worded for humans); a policy
is what a step needs to act (seconds, booleans). Building them here, once, keeps the workflows
free of field-by-field copying: adding a drain option touches the spec model, `DrainPolicy`
with its line in `drain_policy`, and the drain activity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from plan.facts import ClusterFacts
from plan.spec import (
    ClusterSpec,
    ConnectivitySpec,
    DrainSpec,
    MigrationSpec,
    RebootSpec,
    VerifyCheck,
    VerifySpec,
)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterRef(Policy):
    """Which cluster, by name; the worker maps it to credentials (kubeconfig context or
    in-cluster service account)."""

    name: str
    context: str | None = None
    in_cluster: bool = False
    # Where the steps for this cluster run: a worker holding its credentials; None: the
    # workflow's own task queue (workflows/steps.py).
    task_queue: str | None = None


class DrainPolicy(Policy):
    timeout_seconds: float
    grace_period_seconds: int | None = None
    # Pods with emptyDir volumes are evicted too (their data is lost); False makes them
    # blockers, as `kubectl drain` without --delete-emptydir-data does.
    delete_empty_dir_data: bool = False
    force_on_timeout: bool = False  # delete instead of evict when the deadline passes
    # Pods no controller owns are evicted too (nothing re-creates them); False makes them
    # blockers, as `kubectl drain` without --force does.
    evict_unmanaged: bool = False


class RebootPolicy(Policy):
    strategy: Literal["node-shell", "docker", "command"]
    timeout_seconds: float
    image: str
    command: list[str] | None = None  # for the command strategy; {node} and {ip} substituted


class VerifyPolicy(Policy):
    image: str
    checks: list[VerifyCheck]
    timeout_seconds: float
    # Where the echo mesh's pods run, which the peer checks call; None: no mesh (disabled, or a
    # run recorded before the mesh existed), and the peer checks are reported not checked.
    echo_namespace: str | None = None


class ConnectivityPolicy(Policy):
    """The echo mesh and the monitor, from the spec's `connectivity`."""

    namespace: str
    image: str
    max_failed_requests: int
    window_seconds: float
    interval_seconds: float
    sample_pairs: int


class Overlays(Policy):
    """The two pod networks a node moves between, and where Cilium runs."""

    cilium_namespace: str
    cilium_pools: list[str]
    flannel_network: str | None  # None when discovery found no flannel network


class NodePolicies(Policy):
    drain: DrainPolicy
    reboot: RebootPolicy
    verify: VerifyPolicy
    overlays: Overlays


def cluster_ref(cluster: ClusterSpec) -> ClusterRef:
    return ClusterRef(name=cluster.name, context=cluster.kubeconfig_context,
                      in_cluster=cluster.in_cluster, task_queue=cluster.task_queue)


def drain_policy(drain: DrainSpec) -> DrainPolicy:
    return DrainPolicy(timeout_seconds=drain.timeout.total_seconds(),
                       grace_period_seconds=drain.grace_period_seconds,
                       delete_empty_dir_data=drain.delete_empty_dir_data,
                       force_on_timeout=drain.on_timeout == "force",
                       evict_unmanaged=drain.evict_unmanaged_pods)


def reboot_policy(reboot: RebootSpec) -> RebootPolicy:
    return RebootPolicy(strategy=reboot.strategy, timeout_seconds=reboot.timeout.total_seconds(),
                        image=reboot.image, command=reboot.command)


def verify_policy(verify: VerifySpec, connectivity: ConnectivitySpec) -> VerifyPolicy:
    return VerifyPolicy(image=verify.probe_image, checks=list(verify.checks),
                        timeout_seconds=verify.timeout.total_seconds(),
                        echo_namespace=connectivity.namespace if connectivity.enabled else None)


def connectivity_policy(connectivity: ConnectivitySpec) -> ConnectivityPolicy | None:
    """None when the spec turns the echo mesh off."""
    if not connectivity.enabled:
        return None
    return ConnectivityPolicy(namespace=connectivity.namespace, image=connectivity.echo_image,
                              max_failed_requests=connectivity.max_failed_requests,
                              window_seconds=connectivity.window.total_seconds(),
                              interval_seconds=connectivity.interval.total_seconds(),
                              sample_pairs=connectivity.sample_pairs)


def overlays(spec: MigrationSpec, facts: ClusterFacts) -> Overlays:
    return Overlays(cilium_namespace=spec.cilium.namespace,
                    cilium_pools=[str(c) for c in spec.network.pod_cidrs],
                    flannel_network=str(facts.flannel.network) if facts.flannel else None)


def node_policies(spec: MigrationSpec, facts: ClusterFacts) -> NodePolicies:
    return NodePolicies(drain=drain_policy(spec.drain), reboot=reboot_policy(spec.reboot),
                        verify=verify_policy(spec.verify, spec.connectivity),
                        overlays=overlays(spec, facts))
