"""The API server as a pod on a node sees it: which address a pod dials, and whether it answers.

A pod's Kubernetes client (client-go's in-cluster config, which the Cilium agent uses when it
is given no kubeconfig) dials ``KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT``. The kubelet
sets both to the ``kubernetes`` Service (ClusterIP, port 443) in every container; a container's
own ``env`` entry of the same name wins (that is what the Cilium chart's ``k8sServiceHost`` and
``k8sServicePort`` values render).

From a node, the API server answers at its node-visible address only. The ClusterIP works while
kube-proxy runs on the node and the Service's EndpointSlice lists that address. A loopback
address is the node itself, where no API server listens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import NamedTuple

from sandbox.topology import API_SERVICE_IP, API_SERVICE_PORT, ApiServerAddress


class Endpoint(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def dialled_endpoint(env: Callable[[str], str | None]) -> Endpoint | str:
    """What a pod's in-cluster client dials, given its container env; a string when the env
    makes no usable address (the client fails to start, as client-go's does)."""
    host = env("KUBERNETES_SERVICE_HOST") or API_SERVICE_IP
    raw_port = env("KUBERNETES_SERVICE_PORT") or str(API_SERVICE_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        return f"KUBERNETES_SERVICE_PORT={raw_port!r} is not a port number"
    if not 0 < port < 65536:
        return f"KUBERNETES_SERVICE_PORT={port} is not a port number"
    return Endpoint(host, port)


def why_unreachable(endpoint: Endpoint, api_server: ApiServerAddress, kube_proxy_ready: bool,
                    service_endpoints: Callable[[], Iterable[Endpoint]]) -> str | None:
    """Why ``endpoint`` does not reach the API server from the node; None when it does.
    ``service_endpoints`` reads the `kubernetes` Service's endpoints, only when they matter."""
    here = Endpoint(api_server.host, api_server.port)
    if endpoint == here:
        return None
    if endpoint == Endpoint(API_SERVICE_IP, API_SERVICE_PORT):
        if not kube_proxy_ready:
            return (f"{endpoint} is the kubernetes Service, and no kube-proxy runs Ready on "
                    "this node to forward it")
        backends = sorted(str(e) for e in service_endpoints())
        if str(here) not in backends:
            return (f"{endpoint} is the kubernetes Service, whose EndpointSlice lists "
                    f"{', '.join(backends) or 'no endpoint'}, not the API server at {here}")
        return None
    if endpoint.host == "localhost" or _is_loopback(endpoint.host):
        return f"{endpoint.host} is this node itself; no API server listens on it"
    return f"nothing answers at {endpoint} from this node (the API server is at {here})"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
