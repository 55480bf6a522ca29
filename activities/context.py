"""What every activity needs from the worker it runs on: credentials by cluster name, the tools
it shells out to, and the small conventions shared by all steps (heartbeats, typed failures).

Inputs name a cluster (`ClusterRef`); this is the one place that turns a name into credentials,
so no credential ever travels through Temporal.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kubeapi import Kube, Obj
from plan.steps import ClusterRef, StepError

WORKER_NODE_ENV = "CILIUM_MIGRATE_NODE_NAME"


@dataclass
class ActivityContext:
    """Built once per worker process and shared by all activity threads."""

    # Cluster name -> kubeconfig path. Clusters not listed use `default_kubeconfig`, and when
    # that is None too, the usual $KUBECONFIG or ~/.kube/config.
    kubeconfigs: Mapping[str, str] = field(default_factory=dict)
    default_kubeconfig: str | None = None
    helm: str = "helm"
    docker: str = "docker"
    # The node the worker itself runs on (from the downward API), reported by discovery so
    # the planner never drains the worker off its own node first.
    worker_node: str | None = field(default_factory=lambda: os.environ.get(WORKER_NODE_ENV))
    _clients: dict[ClusterRef, Kube] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def kubeconfig(self, cluster: ClusterRef) -> str | None:
        """The kubeconfig file for ``cluster``; None for in-cluster or tool defaults."""
        if cluster.in_cluster:
            return None
        return self.kubeconfigs.get(cluster.name, self.default_kubeconfig)

    def kube(self, cluster: ClusterRef) -> Kube:
        """One API client per cluster, reused by every activity thread (it pools connections)."""
        with self._lock:
            client = self._clients.get(cluster)
            if client is None:
                client = Kube(self.kubeconfig(cluster), context=cluster.context,
                              in_cluster=cluster.in_cluster)
                self._clients[cluster] = client
            return client


def step_error(kind: str, message: str, *details: Any) -> ApplicationError:
    """A failure the workflow decides on: typed, never retried by Temporal."""
    return ApplicationError(message, *details, type=kind, non_retryable=True)


def heartbeat(**details: Any) -> None:
    """Reports progress; a retried attempt reads the last details back with `resumed`."""
    activity.heartbeat(details)


def resumed() -> dict[str, Any]:
    """The details of the previous attempt's last heartbeat, or {} on a first attempt."""
    details = activity.info().heartbeat_details
    last = details[0] if details else None
    return last if isinstance(last, dict) else {}


def get_node(kube: Kube, name: str) -> Obj:
    node = kube.get_or_none(f"/api/v1/nodes/{name}")
    if node is None:
        raise step_error(StepError.NODE_GONE, f"node {name} no longer exists")
    return node
