"""The CiliumNodeConfig that switches labelled nodes to Cilium: applied before the first node
moves, deleted at finalize. What it contains and which API serves it is `plan.node_config`'s
decision; this module only writes it.

Cilium's chart ships no CRDs: the operator registers them once it runs, so right after the
install the CiliumNodeConfig API may not be served yet. The apply waits for the CRD, a bounded
time per attempt; an attempt that runs out fails retryably and the step's retries (see
`workflows.steps`) give the operator a few minutes in all.
"""

from __future__ import annotations

import time

from activities.context import heartbeat
from activities.kubeapi import APPLY, Kube, condition_true
from plan.contract import NodeConfigInput

# Server-side apply's owner of the fields we write.
FIELD_MANAGER = "cilium-migrate"
CRD_NAME = "ciliumnodeconfigs.cilium.io"
# Well inside the step's 60-second deadline, so a slow operator costs a retry, not a timeout.
CRD_WAIT_SECONDS = 40.0
CRD_POLL_SECONDS = 2.0


class CrdNotServed(RuntimeError):
    """The CiliumNodeConfig CRD is not (yet) served at the version we write: retryable."""


def apply_node_config(kube: Kube, request: NodeConfigInput,
                      crd_wait_seconds: float = CRD_WAIT_SECONDS) -> None:
    """Server-side apply: creates it, or takes over the fields we own, in one idempotent call.
    Waits first until the API server serves the CRD at `request.api_version`."""
    wait_for_crd(kube, request.api_version, crd_wait_seconds)
    body = {"apiVersion": request.api_version, "kind": "CiliumNodeConfig",
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": {"nodeSelector": {"matchLabels": {request.label: "true"}},
                     "defaults": request.defaults}}
    kube.request("PATCH", _path(request), body, content_type=APPLY,
                 query={"fieldManager": FIELD_MANAGER, "force": "true"})


def wait_for_crd(kube: Kube, api_version: str, timeout: float) -> None:
    """Returns once the CRD is Established and serves `api_version`'s version. Polled rather
    than watched: the worker's RBAC grants `get` on this one CRD only, not list/watch of all."""
    version = api_version.rsplit("/", 1)[-1]
    deadline = time.monotonic() + timeout
    while True:
        problem = _crd_problem(kube, version)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise CrdNotServed(f"{problem} after {timeout:.0f}s; the Cilium operator registers "
                               "it when it starts: is cilium-operator running?")
        heartbeat(waiting_for=CRD_NAME)
        time.sleep(CRD_POLL_SECONDS)


def _crd_problem(kube: Kube, version: str) -> str | None:
    crd = kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    if crd is None:
        return f"CRD {CRD_NAME} does not exist"
    if not condition_true(crd, "Established"):
        return f"CRD {CRD_NAME} is not Established"
    served = [v.get("name") for v in crd.get("spec", {}).get("versions", []) if v.get("served")]
    if version not in served:
        return f"CRD {CRD_NAME} does not serve {version} (served: {', '.join(served) or 'none'})"
    return None


def delete_node_config(kube: Kube, request: NodeConfigInput) -> None:
    kube.delete(_path(request))


def _path(request: NodeConfigInput) -> str:
    return (f"/apis/{request.api_version}/namespaces/{request.namespace}"
            f"/ciliumnodeconfigs/{request.name}")
