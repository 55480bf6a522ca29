"""A sandbox shaped like a snapshot's cluster: the ground a rehearsal migrates.

The simulated nodes take the snapshot's names, zones, labels, taints and sizes; flannel runs
with the snapshot's backend settings; then the namespaces, PriorityClasses, PDBs and workloads
are created through the API server, so the real scheduler places the pods, the real disruption
controller keeps the PDBs and a drain meets what it would meet in the cluster. What the copy
cannot be is said in `Replica.notes`, never hidden.

Containers run a placeholder image: the snapshot holds no images, and the simulator runs no
process for an image it does not know, which is all a pod needs to be placed, evicted and
counted by its PDB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from activities.kubeapi import Kube, Obj
from plan.snapshot import (
    ClusterSnapshot,
    ContainerShape,
    NodeShape,
    PodDisruptionBudgetShape,
    PriorityClassShape,
    WorkloadShape,
)
from sandbox import cluster
from sandbox.topology import CLUSTER_CIDR, NodeSpec, Topology, node_address

PLACEHOLDER_IMAGE = "registry.k8s.io/pause:3.10"
# Taints the control plane itself sets and lifts from a node's state (not-ready, unreachable,
# unschedulable): copied, they would stay for ever on a healthy node.
STATE_TAINT_PREFIX = "node.kubernetes.io/"
# PriorityClasses with this prefix are the API server's own; it refuses to create others.
SYSTEM_PRIORITY_PREFIX = "system-"
POD_SECURITY_LABEL_PREFIX = "pod-security.kubernetes.io/"
WORKLOAD_PATHS = {"Deployment": "deployments", "StatefulSet": "statefulsets",
                  "DaemonSet": "daemonsets", "ReplicaSet": "replicasets"}


@dataclass
class Replica:
    """A running sandbox built from a snapshot, and where it differs from the cluster."""

    state_dir: Path
    kubeconfig: Path
    notes: list[str] = field(default_factory=list)
    # Pods the copy could not place before the migration started: "namespace/name: why".
    unschedulable_before: list[str] = field(default_factory=list)


def topology_of(snapshot: ClusterSnapshot) -> Topology:
    return Topology(nodes=[_node_spec(index, node) for index, node in enumerate(snapshot.nodes)])


def _node_spec(index: int, node: NodeShape) -> NodeSpec:
    return NodeSpec(
        name=node.name, internal_ip=node_address(index), zone=node.zone,
        control_plane=node.control_plane, extra_labels=node.labels,
        registered_taints=[{k: v for k, v in taint.model_dump().items() if v is not None}
                           for taint in node.taints
                           if not taint.key.startswith(STATE_TAINT_PREFIX)],
        capacity=node.capacity or None, allocatable=node.allocatable or None)


def flannel_manifest(snapshot: ClusterSnapshot, bundled: Path) -> str:
    """The bundled flannel manifest with the snapshot's backend (type, port, VNI), tolerating
    every taint: in the cluster flannel runs on every node discovery saw, so it must here."""
    documents = list(yaml.safe_load_all(bundled.read_text()))
    for document in documents:
        if not isinstance(document, dict):
            continue
        if document.get("kind") == "ConfigMap" and "net-conf.json" in (document.get("data") or {}):
            document["data"]["net-conf.json"] = _net_conf(snapshot)
        if document.get("kind") == "DaemonSet":
            document["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    return str(yaml.safe_dump_all(documents, sort_keys=False))


def _net_conf(snapshot: ClusterSnapshot) -> str:
    backend: dict[str, Any] = {"Type": "vxlan"}
    if snapshot.flannel is not None:
        backend = {"Type": snapshot.flannel.backend_type, "Port": snapshot.flannel.port,
                   "VNI": snapshot.flannel.vni}
    # The Network stays the sandbox's: its controller manager hands out node podCIDRs there.
    return json.dumps({"Network": CLUSTER_CIDR, "EnableNFTables": False, "Backend": backend},
                      indent=2)


def differences(snapshot: ClusterSnapshot) -> list[str]:
    """What the copy cannot reproduce of this snapshot, for the report."""
    notes = []
    if snapshot.flannel is None:
        notes.append("the snapshot found no flannel; the copy runs flannel with its defaults")
    elif str(snapshot.flannel.network) != CLUSTER_CIDR:
        notes.append(f"flannel's network is {snapshot.flannel.network} in the cluster and "
                     f"{CLUSTER_CIDR} in the copy (the sandbox's node IPAM range)")
    guarded = [ns.name for ns in snapshot.namespaces
               if any(k.startswith(POD_SECURITY_LABEL_PREFIX) for k in ns.labels)]
    if guarded:
        notes.append(f"Pod Security levels are not enforced in the copy ({', '.join(guarded)})")
    if snapshot.workloads:
        notes.append("containers run no program (images are not pulled): drains, PDBs and "
                     "scheduling are rehearsed, not the applications' own start-up time")
    return notes


def objects_to_create(snapshot: ClusterSnapshot) -> list[tuple[str, Obj]]:
    """(collection path, object) for everything the copy needs besides its nodes, in an
    order the API server accepts: namespaces, PriorityClasses, PDBs, then the workloads."""
    created: list[tuple[str, Obj]] = []
    for namespace in snapshot.namespaces:
        # Pod Security levels are left out: the placeholder containers carry none of the
        # security contexts a restricted namespace demands, so its pods would be refused.
        labels = {k: v for k, v in namespace.labels.items()
                  if not k.startswith(POD_SECURITY_LABEL_PREFIX)}
        created.append(("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace.name, "labels": labels}}))
    created += [("/apis/scheduling.k8s.io/v1/priorityclasses", _priority_class(p))
                for p in snapshot.priority_classes
                if not p.name.startswith(SYSTEM_PRIORITY_PREFIX)]
    created += [(f"/apis/policy/v1/namespaces/{p.namespace}/poddisruptionbudgets", _pdb(p))
                for p in snapshot.pdbs]
    flannel = ((snapshot.flannel.namespace, snapshot.flannel.daemonset)
               if snapshot.flannel else None)
    for workload in snapshot.workloads:
        if workload.kind == "DaemonSet" and (workload.namespace, workload.name) == flannel:
            continue  # the sandbox runs its own flannel, with the snapshot's settings
        created.append((f"/apis/apps/v1/namespaces/{workload.namespace}/"
                        f"{WORKLOAD_PATHS[workload.kind]}", _workload(workload)))
    return created


def _priority_class(shape: PriorityClassShape) -> Obj:
    obj: Obj = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": shape.name}, "value": shape.value,
                "globalDefault": shape.global_default}
    if shape.preemption_policy:
        obj["preemptionPolicy"] = shape.preemption_policy
    return obj


def _pdb(shape: PodDisruptionBudgetShape) -> Obj:
    spec: Obj = {"selector": shape.selector}
    if shape.min_available is not None:
        spec["minAvailable"] = shape.min_available
    if shape.max_unavailable is not None:
        spec["maxUnavailable"] = shape.max_unavailable
    if shape.unhealthy_pod_eviction_policy:
        spec["unhealthyPodEvictionPolicy"] = shape.unhealthy_pod_eviction_policy
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": shape.name, "namespace": shape.namespace}, "spec": spec}


def _workload(shape: WorkloadShape) -> Obj:
    pod = shape.pod
    pod_spec: Obj = {
        "containers": [_container(c) for c in pod.containers] or [_container(
            ContainerShape(name="main"))],
        "nodeSelector": pod.node_selector, "tolerations": pod.tolerations,
        "topologySpreadConstraints": pod.topology_spread_constraints,
        "hostNetwork": pod.host_network,
    }
    if pod.init_containers:
        pod_spec["initContainers"] = [_container(c) for c in pod.init_containers]
    if pod.affinity:
        pod_spec["affinity"] = pod.affinity
    if pod.termination_grace_period_seconds is not None:
        pod_spec["terminationGracePeriodSeconds"] = pod.termination_grace_period_seconds
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    spec: Obj = {"selector": shape.selector,
                 "template": {"metadata": {"labels": pod.labels}, "spec": pod_spec}}
    if shape.replicas is not None:
        spec["replicas"] = shape.replicas
    if shape.kind == "StatefulSet":
        spec["serviceName"] = shape.name
        if shape.pod_management_policy:
            spec["podManagementPolicy"] = shape.pod_management_policy
    return {"apiVersion": "apps/v1", "kind": shape.kind,
            "metadata": {"name": shape.name, "namespace": shape.namespace}, "spec": spec}


def _container(shape: ContainerShape) -> Obj:
    resources = {key: value for key, value in (("requests", shape.requests),
                                                ("limits", shape.limits)) if value}
    return {"name": shape.name, "image": PLACEHOLDER_IMAGE, "resources": resources}


def populate(kube: Kube, snapshot: ClusterSnapshot) -> list[str]:
    """Cordons what the cluster had cordoned, then creates the snapshot's objects; returns
    notes for objects already there (the sandbox's own kube-proxy and CoreDNS, say), which
    are left as they are."""
    for node in snapshot.nodes:
        if not node.schedulable:
            kube.patch(f"/api/v1/nodes/{node.name}", {"spec": {"unschedulable": True}})
    kept = []
    for path, obj in objects_to_create(snapshot):
        # Namespaces the sandbox has too (default, kube-system...) are the same namespaces.
        if kube.create(path, obj) is None and obj["kind"] != "Namespace":
            where = obj["metadata"].get("namespace")
            kept.append(f"{obj['kind']} {where + '/' if where else ''}{obj['metadata']['name']}"
                        " already exists in the sandbox and was kept as it is")
    return kept


def unschedulable_pods(kube: Kube) -> list[str]:
    """Pods the scheduler has given up placing for now, with its reason."""
    found = []
    for pod in kube.get("/api/v1/pods", fieldSelector="status.phase=Pending")["items"]:
        for condition in pod.get("status", {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get(
                    "reason") == "Unschedulable":
                found.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}: "
                             f"{condition.get('message', '')}")
    return sorted(found)


def wait_until_placed(kube: Kube, timeout: float, quiet_polls: int = 3) -> None:
    """Waits until every pod is running or refused by the scheduler, and the pods have stayed
    the same for ``quiet_polls`` looks in a row: the controllers make pods a while after their
    workloads are created (a StatefulSet one at a time), so no pod yet is not done yet."""
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    quiet = 0
    while time.monotonic() < deadline:
        pods = kube.get("/api/v1/pods")["items"]
        now = {(p["metadata"]["namespace"] + "/" + p["metadata"]["name"],
                p.get("status", {}).get("phase", "")) for p in pods}
        settled = all(p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed")
                      or any(c.get("reason") == "Unschedulable"
                             for c in p.get("status", {}).get("conditions") or [])
                      for p in pods)
        quiet = quiet + 1 if settled and now == seen else 0
        if quiet >= quiet_polls:
            return
        seen = now
        time.sleep(1)


def build(work_dir: Path, snapshot: ClusterSnapshot, reboot_seconds: float = 2.0,
          shared_kernel: bool = False,
          progress: Callable[[str], None] = lambda message: None) -> Replica:
    """Starts a sandbox in ``work_dir/sandbox`` shaped like ``snapshot`` and fills it; the
    caller stops it with `cluster.down`. ``shared_kernel``: nodes are containers, as kind's
    (for the docker reboot strategy)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest = work_dir / "kube-flannel.yml"
    manifest.write_text(flannel_manifest(snapshot, cluster.MANIFESTS / "kube-flannel.yml"))
    state_dir = work_dir / "sandbox"
    cluster.up(state_dir, nodes=len(snapshot.nodes), cluster_name=snapshot.cluster,
               replace=True, topology=topology_of(snapshot), flannel_manifest=manifest,
               simulator_args=("--reboot-seconds", str(reboot_seconds)),
               shared_kernel=shared_kernel, progress=progress)
    kubeconfig = state_dir / "kubeconfig"
    kube = Kube(str(kubeconfig))
    progress(f"creating {len(snapshot.workloads)} workloads, {len(snapshot.pdbs)} PDBs, "
             f"{len(snapshot.priority_classes)} PriorityClasses")
    notes = differences(snapshot) + populate(kube, snapshot)
    wait_until_placed(kube, timeout=60.0 + len(snapshot.workloads))
    return Replica(state_dir=state_dir, kubeconfig=kubeconfig, notes=notes,
                   unschedulable_before=unschedulable_pods(kube))
