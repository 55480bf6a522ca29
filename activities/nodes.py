"""Node bookkeeping steps: snapshot, cordon, uncordon, label.

The snapshot also reads the node's boot witness the way its reboot strategy will, so the reboot
step later knows, even after a crash, whether its reboot already happened.

Cordoning records its owner in an annotation, so a run only ever uncordons what it cordoned:
a node an operator cordoned before the migration stays cordoned after it. Every write decided on
what the node was carries that resourceVersion, so a concurrent change makes it decide again;
the label needs no decision (the patch is the same whatever the node holds) and no read.
Uncordoning first tries one JSON patch whose test op is the decision, made by the server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from kubernetes.client.rest import ApiException

from activities.context import get_node, record_node_event, step_error
from activities.kubeapi import JSON_PATCH, Kube, Obj, boot_id, condition_true, unschedulable
from activities.reboot.strategies import RebootStrategy
from plan.contract import (
    CORDONED_BY_ANNOTATION,
    CordonResult,
    LabelInput,
    NodeRef,
    NodeSnapshot,
    SnapshotInput,
    StepError,
    SwitchedNodes,
)
from plan.facts import MIGRATION_LABEL

CONFLICT_ATTEMPTS = 5
R = TypeVar("R")


def snapshot_node(kube: Kube, request: SnapshotInput,
                  strategies: Mapping[str, RebootStrategy]) -> NodeSnapshot:
    node = get_node(kube, request.target.node)
    meta = node["metadata"]
    return NodeSnapshot(
        node=request.target.node,
        unschedulable=unschedulable(node),
        boot_id=boot_id(node),
        boot_witness=strategies[request.reboot.strategy].boot_witness(kube, node),
        ready=condition_true(node, "Ready"),
        labels=meta.get("labels") or {},
        cordoned_by=(meta.get("annotations") or {}).get(CORDONED_BY_ANNOTATION),
    )


def cordon_node(kube: Kube, target: NodeRef) -> CordonResult:
    """Ensures the node is cordoned; it is ours only if it was schedulable when we came."""

    def decide(node: Obj) -> tuple[Obj | None, CordonResult]:
        owner = _owner(node)
        if owner == target.migration_id:  # our earlier attempt: re-assert, someone may undo it
            patch = None if unschedulable(node) else {"spec": {"unschedulable": True}}
            return patch, CordonResult(cordoned_by_us=True)
        if unschedulable(node):
            return None, CordonResult(cordoned_by_us=False)
        return ({"metadata": {"annotations": {CORDONED_BY_ANNOTATION: target.migration_id}},
                 "spec": {"unschedulable": True}}, CordonResult(cordoned_by_us=True))

    return _update(kube, target.node, decide, event=(
        "CiliumMigrateCordoned", f"cordoned by cilium-migrate run {target.migration_id}"))


def uncordon_node(kube: Kube, target: NodeRef) -> bool:
    """Uncordons only a node this run cordoned; True when it did (or had done) so.

    The usual case, a node this run cordoned that nobody touched since, takes one write and no
    read: a JSON patch that the server applies only while the annotation names this run (its
    `test` op), atomically with the removals. Anything else (not ours, uncordoned already, the
    cordon lifted by someone else: the patch does not apply) is read and decided on."""
    name, request_path = target.node, f"/api/v1/nodes/{target.node}"
    event = ("CiliumMigrateUncordoned", f"uncordoned by cilium-migrate run {target.migration_id}")
    annotation = "/metadata/annotations/" + _json_pointer_token(CORDONED_BY_ANNOTATION)
    try:
        node = kube.request("PATCH", request_path, [
            {"op": "test", "path": annotation, "value": target.migration_id},
            {"op": "remove", "path": annotation},
            {"op": "remove", "path": "/spec/unschedulable"},
        ], content_type=JSON_PATCH)
    except ApiException as error:
        if error.status == 404:
            raise step_error(StepError.NODE_GONE, f"node {name} no longer exists") from None
        if error.status not in (400, 422):  # the patch did not apply: a test or a path failed
            raise
    else:
        record_node_event(kube, name, *event, uid=node["metadata"].get("uid"))
        return True

    def decide(node: Obj) -> tuple[Obj | None, bool]:
        if _owner(node) != target.migration_id:
            return None, False
        return {"metadata": {"annotations": {CORDONED_BY_ANNOTATION: None}},
                "spec": {"unschedulable": None}}, True

    return _update(kube, target.node, decide, event=event)


def label_node(kube: Kube, request: LabelInput) -> None:
    """Ensures the label has the value (None: ensures it is absent).

    One patch, without reading the node first: setting a label to the value it has, or
    removing one that is absent, changes nothing, so there is no decision to guard with a
    resourceVersion. No event either: the label is on the node for all to see, and the
    events around it (cordoned, verified, uncordoned) tell the story."""
    name = request.target.node
    if kube.patch(f"/api/v1/nodes/{name}",
                  {"metadata": {"labels": {request.key: request.value}}}) is None:
        raise step_error(StepError.NODE_GONE, f"node {name} no longer exists")


def list_switched_nodes(kube: Kube) -> SwitchedNodes:
    """Every node now in the cluster, sorted by whether it carries the migration label: what
    finalize checks before it hands the whole cluster to Cilium (nodes that joined after the
    plan, or were excluded, skipped or rolled back, are unswitched)."""
    switched: list[str] = []
    unswitched: list[str] = []
    for node in kube.get("/api/v1/nodes")["items"]:
        labels = node["metadata"].get("labels") or {}
        (switched if labels.get(MIGRATION_LABEL) == "true" else unswitched).append(
            node["metadata"]["name"])
    return SwitchedNodes(switched=sorted(switched), unswitched=sorted(unswitched))


def _json_pointer_token(key: str) -> str:
    """A map key as one JSON Pointer token (RFC 6901): '~' and '/' escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _owner(node: Obj) -> str | None:
    return (node["metadata"].get("annotations") or {}).get(CORDONED_BY_ANNOTATION)


def _update(kube: Kube, name: str, decide: Callable[[Obj], tuple[Obj | None, R]],
            event: tuple[str, str] | None = None) -> R:
    """Reads the node, lets ``decide`` choose a patch, and applies it only if the node has not
    changed in between (resourceVersion precondition); decides again after a conflict.

    ``event`` (reason, message) is recorded on the node only when a patch was applied, so a
    retry that finds the work done adds no second event."""
    for _ in range(CONFLICT_ATTEMPTS):
        node = get_node(kube, name)
        patch, result = decide(node)
        if patch is None:
            return result
        patch.setdefault("metadata", {})["resourceVersion"] = node["metadata"]["resourceVersion"]
        try:
            if kube.patch(f"/api/v1/nodes/{name}", patch) is None:
                get_node(kube, name)  # raises NodeGone
            if event is not None:
                record_node_event(kube, name, *event, uid=node["metadata"].get("uid"))
            return result
        except ApiException as error:
            if error.status != 409:
                raise
    raise RuntimeError(f"node {name} kept changing while we updated it; retrying the step")
