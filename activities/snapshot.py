"""Reading a cluster into a `ClusterSnapshot`, read-only, for a rehearsal.

Nodes and flannel come from the same discovery `plan` runs, so a rehearsal starts from what a
migration would see; the workloads, PDBs, PriorityClasses and namespaces are listed here, a
page at a time. Only the fields `plan.snapshot` names are copied out of each object: Secrets
and ConfigMaps are never listed, and a pod template's images, commands, env, volumes and
annotations are never read into the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from activities.discovery import discover_cluster
from activities.kubeapi import Kube, Obj, controller_of
from plan.snapshot import (
    ClusterSnapshot,
    ContainerShape,
    NamespaceShape,
    NodeShape,
    PodDisruptionBudgetShape,
    PodShape,
    PriorityClassShape,
    WorkloadKind,
    WorkloadShape,
)

PAGE = 500
WORKLOAD_PATHS: tuple[tuple[WorkloadKind, str], ...] = (
    ("Deployment", "/apis/apps/v1/deployments"),
    ("StatefulSet", "/apis/apps/v1/statefulsets"),
    ("DaemonSet", "/apis/apps/v1/daemonsets"),
    ("ReplicaSet", "/apis/apps/v1/replicasets"),
)


def read_snapshot(kube: Kube, cluster: str, taken_at: datetime) -> ClusterSnapshot:
    facts = discover_cluster(kube)
    sizes = {n["metadata"]["name"]: n.get("status", {}) for n in _all(kube, "/api/v1/nodes")}
    nodes = [NodeShape(name=n.name, control_plane=n.control_plane, zone=n.zone,
                       schedulable=n.schedulable, labels=n.labels, taints=n.taints,
                       capacity=_quantities(sizes.get(n.name, {}).get("capacity")),
                       allocatable=_quantities(sizes.get(n.name, {}).get("allocatable")))
             for n in facts.nodes]
    return ClusterSnapshot(
        cluster=cluster, taken_at=taken_at, server_version=facts.server_version,
        nodes=nodes,
        namespaces=[NamespaceShape(name=ns["metadata"]["name"],
                                   labels=ns["metadata"].get("labels") or {})
                    for ns in _all(kube, "/api/v1/namespaces")],
        workloads=[shape for kind, path in WORKLOAD_PATHS for obj in _all(kube, path)
                   if (shape := _workload(kind, obj)) is not None],
        pdbs=[_pdb(p) for p in _all(kube, "/apis/policy/v1/poddisruptionbudgets")],
        priority_classes=[_priority_class(p) for p in
                          _all(kube, "/apis/scheduling.k8s.io/v1/priorityclasses")],
        flannel=facts.flannel,
    )


def _all(kube: Kube, path: str) -> Iterator[Obj]:
    for page in kube.pages(path, PAGE):
        yield from page


def _quantities(values: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (values or {}).items()}


def _workload(kind: WorkloadKind, obj: Obj) -> WorkloadShape | None:
    # A ReplicaSet a Deployment owns is made again by that Deployment; copying it as well
    # would run its pods twice.
    if kind == "ReplicaSet" and controller_of(obj) is not None:
        return None
    spec = obj.get("spec") or {}
    return WorkloadShape(
        kind=kind, namespace=obj["metadata"]["namespace"], name=obj["metadata"]["name"],
        replicas=None if kind == "DaemonSet" else int(spec.get("replicas", 1)),
        selector=spec.get("selector") or {},
        pod_management_policy=spec.get("podManagementPolicy"),
        pod=_pod_shape(spec.get("template") or {}))


def _pod_shape(template: Obj) -> PodShape:
    spec = template.get("spec") or {}
    return PodShape(
        labels=(template.get("metadata") or {}).get("labels") or {},
        node_selector=spec.get("nodeSelector") or {},
        tolerations=spec.get("tolerations") or [],
        affinity=spec.get("affinity") or None,
        topology_spread_constraints=spec.get("topologySpreadConstraints") or [],
        termination_grace_period_seconds=spec.get("terminationGracePeriodSeconds"),
        priority_class_name=spec.get("priorityClassName"),
        host_network=bool(spec.get("hostNetwork")),
        containers=[_container(c) for c in spec.get("containers") or []],
        init_containers=[_container(c) for c in spec.get("initContainers") or []],
    )


def _container(container: Obj) -> ContainerShape:
    resources = container.get("resources") or {}
    return ContainerShape(name=container["name"],
                          requests=_quantities(resources.get("requests")),
                          limits=_quantities(resources.get("limits")))


def _pdb(pdb: Obj) -> PodDisruptionBudgetShape:
    spec = pdb.get("spec") or {}
    return PodDisruptionBudgetShape(
        namespace=pdb["metadata"]["namespace"], name=pdb["metadata"]["name"],
        selector=spec.get("selector") or {},
        min_available=spec.get("minAvailable"), max_unavailable=spec.get("maxUnavailable"),
        unhealthy_pod_eviction_policy=spec.get("unhealthyPodEvictionPolicy"))


def _priority_class(priority_class: Obj) -> PriorityClassShape:
    return PriorityClassShape(
        name=priority_class["metadata"]["name"], value=int(priority_class.get("value", 0)),
        global_default=bool(priority_class.get("globalDefault")),
        preemption_policy=priority_class.get("preemptionPolicy"))
