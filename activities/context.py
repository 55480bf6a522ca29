"""What every activity needs from the worker it runs on: credentials by cluster name, the tools
it shells out to, and the small conventions shared by all steps (heartbeats, typed failures).

Inputs name a cluster (`ClusterRef`); this is the one place that turns a name into credentials,
so no credential ever travels through Temporal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError

from activities.kubeapi import Kube, Obj
from plan.contract import ClusterRef, StepError

WORKER_NODE_ENV = "CILIUM_MIGRATE_NODE_NAME"
EVENT_COMPONENT = "cilium-migrate"
EVENT_REASON_PREFIX = "CiliumMigrate"
# The API server refuses event messages over 1 KiB.
EVENT_MESSAGE_LIMIT = 1024

log = logging.getLogger(__name__)


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


def metric_meter() -> MetricMeter:
    """The running activity's meter (its metrics leave through the worker's runtime), or a
    no-op meter when the step runs outside an activity (unit tests, scripts)."""
    return activity.metric_meter() if activity.in_activity() else MetricMeter.noop


def record_node_event(kube: Kube, node_name: str, reason: str, message: str,
                      type: str = "Normal", *, uid: str | None = None) -> None:
    """Writes a Kubernetes Event about the node, so `kubectl describe node` tells what the
    migration did to it. Best effort: a step never fails because its event could not be written.

    ``uid`` is the node's UID when the caller has the node at hand; otherwise the node name,
    the kubelet's convention, which `kubectl describe node` searches for as well.
    """
    now = datetime.now(UTC)
    seconds = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(message.encode()) > EVENT_MESSAGE_LIMIT:
        message = message.encode()[:EVENT_MESSAGE_LIMIT - 3].decode(errors="ignore") + "..."
    event: Obj = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{node_name}.", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node_name,
                           "uid": uid or node_name},
        "reason": reason, "message": message, "type": type,
        "action": reason.removeprefix(EVENT_REASON_PREFIX) or reason,
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": EVENT_COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": seconds, "lastTimestamp": seconds,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }
    try:
        kube.create("/api/v1/namespaces/default/events", event)
    except Exception as error:  # noqa: BLE001 - an event is never worth failing the step for
        log.warning("could not record event %s on node %s: %s", reason, node_name, error)
