"""The CiliumNodeConfig that switches labelled nodes to Cilium: applied before the first node
moves, deleted at finalize. What it contains and which API serves it is `plan.node_config`'s
decision; this module only writes it.
"""

from __future__ import annotations

from activities.kubeapi import APPLY, Kube
from plan.contract import NodeConfigInput

# Server-side apply's owner of the fields we write.
FIELD_MANAGER = "cilium-migrate"


def apply_node_config(kube: Kube, request: NodeConfigInput) -> None:
    """Server-side apply: creates it, or takes over the fields we own, in one idempotent call."""
    body = {"apiVersion": request.api_version, "kind": "CiliumNodeConfig",
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": {"nodeSelector": {"matchLabels": {request.label: "true"}},
                     "defaults": request.defaults}}
    kube.request("PATCH", _path(request), body, content_type=APPLY,
                 query={"fieldManager": FIELD_MANAGER, "force": "true"})


def delete_node_config(kube: Kube, request: NodeConfigInput) -> None:
    kube.delete(_path(request))


def _path(request: NodeConfigInput) -> str:
    return (f"/apis/{request.api_version}/namespaces/{request.namespace}"
            f"/ciliumnodeconfigs/{request.name}")
