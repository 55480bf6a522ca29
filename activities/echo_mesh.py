"""The echo mesh: an agnhost `netexec` DaemonSet on every node the migration moves, in a
namespace of its own, deployed before the first node moves and removed at finalize or abort.

Verify's peer checks send it HTTP requests, and the connectivity monitor makes its pods /dial
each other across nodes and overlays (`activities.connectivity`). The namespace carries the
migration's ownership labels; a namespace of that name that another owner made is never used or
deleted: the step says so and stops.

netexec also serves /shell, /upload and /exit to anyone who can reach the pod. The pods run
unprivileged, with no service account token, no capabilities and a read-only root file system,
so what such a request can reach is the echo container itself.
"""

from __future__ import annotations

from typing import Any

from activities.context import heartbeat, step_error
from activities.kubeapi import Kube, Obj, is_terminating
from activities.rollout import daemonset_rolled_out, wait_rolled_out
from plan.contract import (
    ECHO_APP,
    ECHO_LABELS,
    ECHO_PORT,
    MANAGED_BY,
    OWNER_CLUSTER_LABEL,
    OWNER_MIGRATION_ANNOTATION,
    EchoMeshInput,
    EchoMeshRemoval,
    EchoMeshStatus,
    StepError,
)


def deploy_echo_mesh(kube: Kube, request: EchoMeshInput) -> EchoMeshStatus:
    """Ensures the namespace and the DaemonSet as `echo_daemonset` describes them, then waits
    (up to the step's timeout) for an echo pod to be Ready on every node the DaemonSet
    controller scheduled one on. A mesh that is not complete by then is reported as it is, not
    failed: the monitor uses the pods that are Ready, and the run's progress shows the count."""
    policy = request.policy
    namespace = _own_namespace(kube, request.cluster.name, policy.namespace,
                               request.migration_id, request.timeout_seconds)
    daemonsets = f"/apis/apps/v1/namespaces/{namespace}/daemonsets"
    wanted = echo_daemonset(policy.image, request.exclude_nodes)
    if kube.create(daemonsets, wanted) is None:
        # A retry, or a run that resumed: the spec may have changed the image or the exclusions.
        kube.patch(f"{daemonsets}/{ECHO_APP}", wanted, content_type="application/merge-patch+json")
    daemonset = wait_rolled_out(kube, daemonsets, ECHO_APP, daemonset_rolled_out,
                                request.timeout_seconds)
    status = daemonset.get("status") or {}
    return EchoMeshStatus(namespace=namespace, image=policy.image,
                          desired=status.get("desiredNumberScheduled", 0),
                          ready=status.get("numberReady", 0))


def remove_echo_mesh(kube: Kube, request: EchoMeshRemoval) -> bool:
    """Deletes the mesh's namespace (the namespace controller deletes the DaemonSet and its
    pods) and waits until it is gone; True then, False if it is still terminating when the
    step's time is up. A namespace that is not this cluster's mesh is left alone."""
    path = f"/api/v1/namespaces/{request.namespace}"
    found = kube.get_or_none(path)
    if found is None:
        return True
    _check_owner(found, request.cluster.name)
    if not is_terminating(found):
        kube.delete(path, {"propagationPolicy": "Background"})
    return _gone(kube, request.namespace, request.timeout_seconds)


def _own_namespace(kube: Kube, cluster: str, name: str, migration_id: str,
                   timeout: float) -> str:
    """The mesh's namespace, created if missing; one left terminating by an earlier removal is
    waited out first (nothing can be created in it)."""
    path = f"/api/v1/namespaces/{name}"
    while True:
        found = kube.get_or_none(path)
        if found is None:
            kube.create("/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name,
                             "labels": {**MANAGED_BY, OWNER_CLUSTER_LABEL: cluster},
                             "annotations": {OWNER_MIGRATION_ANNOTATION: migration_id}}})
            continue  # read back: another worker may have raced us to it
        _check_owner(found, cluster)
        if not is_terminating(found):
            return name
        if not _gone(kube, name, timeout):
            raise RuntimeError(f"namespace {name} is still terminating after {timeout:.0f}s")


def _gone(kube: Kube, namespace: str, timeout: float) -> bool:
    """Waits, on a watch, until ``namespace`` no longer exists; False if it still does when
    ``timeout`` is up."""
    return bool(kube.wait("/api/v1/namespaces", lambda found: not found, timeout,
                          on_tick=lambda: heartbeat(namespace=namespace, terminating=True),
                          fieldSelector=f"metadata.name={namespace}"))


def _check_owner(namespace: Obj, cluster: str) -> None:
    labels = namespace["metadata"].get("labels") or {}
    name = namespace["metadata"]["name"]
    if labels.get(OWNER_CLUSTER_LABEL) != cluster or any(
            labels.get(key) != value for key, value in MANAGED_BY.items()):
        raise step_error(
            StepError.NAMESPACE_NOT_OURS,
            f"namespace {name} exists and is not this migration's echo mesh (it lacks the "
            f"labels {OWNER_CLUSTER_LABEL}={cluster} and app.kubernetes.io/managed-by="
            f"cilium-migrate); set connectivity.namespace to a namespace of the mesh's own")


def echo_daemonset(image: str, exclude_nodes: list[str]) -> Obj:
    """One netexec pod per node, tolerating every taint (the nodes being migrated are cordoned,
    and control-plane nodes are tainted), except on the nodes the run leaves alone."""
    labels = {**ECHO_LABELS, **MANAGED_BY}
    pod_spec: dict[str, Any] = {
        "tolerations": [{"operator": "Exists"}],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "echo", "image": image,
            "args": ["netexec", f"--http-port={ECHO_PORT}", "--udp-port=-1"],
            "ports": [{"name": "http", "containerPort": ECHO_PORT, "protocol": "TCP"}],
            # /readyz turns 503 at SIGTERM: a pod on its way out leaves the mesh at once.
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": ECHO_PORT},
                               "periodSeconds": 5, "failureThreshold": 1},
            "resources": {"requests": {"cpu": "5m", "memory": "16Mi"},
                          "limits": {"memory": "64Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    }
    # null, not absent: a merge patch then removes the exclusions an earlier deploy made.
    pod_spec["affinity"] = None
    if exclude_nodes:
        pod_spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{
                "key": "metadata.name", "operator": "NotIn", "values": sorted(exclude_nodes)}]}]}}}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": ECHO_APP, "labels": labels},
        "spec": {
            "selector": {"matchLabels": ECHO_LABELS},
            # Nodes move one wave at a time; the mesh itself is changed all at once.
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
