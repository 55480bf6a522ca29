"""Which overlay a pod is on, told by its address: the pods holding an address on a pod network,
and the range (Cilium pool or flannel network) an address falls in.

During the migration both overlays carry pods; recycling, the health check and verification
all sort pods by their address, so they share this one reading of it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from activities.kubeapi import Kube, Obj
from plan.policies import Overlays

POD_PAGE = 500


def range_of(ip: str, cidrs: list[str]) -> str | None:
    """The first of ``cidrs`` that holds ``ip``, if any."""
    address = ipaddress.ip_address(ip)
    return next((cidr for cidr in cidrs if address in ipaddress.ip_network(cidr)), None)


def overlay_ranges(overlays: Overlays) -> dict[str, list[str]]:
    """Each overlay's pod address ranges; flannel has none when discovery found no network."""
    ranges = {"cilium": overlays.cilium_pools}
    if overlays.flannel_network:
        ranges["flannel"] = [overlays.flannel_network]
    return ranges


def running_pods(kube: Kube, namespaces: list[str] | None) -> Iterator[Obj]:
    """Running pods on a pod network (not the host's), with an address; ``namespaces`` None
    means all of them. Read a page at a time: a large cluster runs up to 150,000 pods, and one
    list of them all would be hundreds of megabytes in the worker at once."""
    paths = (["/api/v1/pods"] if namespaces is None
             else [f"/api/v1/namespaces/{ns}/pods" for ns in namespaces])
    for path in paths:
        # The server leaves out the host's pods (every node's Cilium agent and flannel: half
        # the pods of a small cluster), so they are neither sent nor parsed.
        for page in kube.pages(path, POD_PAGE,
                               fieldSelector="status.phase=Running,spec.hostNetwork=false"):
            yield from (p for p in page if p.get("status", {}).get("podIP"))
