"""Where the Cilium agents reach the API server: the chart's k8sServiceHost and k8sServicePort.

Agents run on the nodes, so the address must be one the nodes reach. The client's kubeconfig
URL is not (kind: a host port on 127.0.0.1; Rancher, Teleport or a proxy: not the API server at
all), so it is never used. In order:

1. the spec's ``cilium.k8sServiceHost``/``k8sServicePort``;
2. what the cluster publishes for its nodes (discovery: kubeadm's kube-proxy ConfigMap, else
   the cluster-info ConfigMap);
3. nothing: the values leave both keys unset, and each agent uses the ``kubernetes`` Service
   (KUBERNETES_SERVICE_HOST as the kubelet sets it), which kube-proxy carries. Without
   kube-proxy that cannot work, and preflight blocks (``api-server-unknown``).
"""

from __future__ import annotations

from plan.facts import ApiEndpoint, ApiEndpointSource, ClusterFacts
from plan.spec import MigrationSpec

SOURCE_NAMES: dict[ApiEndpointSource, str] = {
    "spec": "spec",
    "kube-proxy": "kube-proxy ConfigMap",
    "cluster-info": "cluster-info ConfigMap",
}


def agent_api_endpoint(spec: MigrationSpec, facts: ClusterFacts) -> ApiEndpoint | None:
    """The address the agents are given, or None to leave k8sServiceHost/Port unset."""
    cilium = spec.cilium
    if cilium.k8s_service_host is not None and cilium.k8s_service_port is not None:
        return ApiEndpoint(host=cilium.k8s_service_host, port=cilium.k8s_service_port,
                           source="spec")
    return facts.api_endpoint


def describe_agent_api_endpoint(spec: MigrationSpec, facts: ClusterFacts) -> str:
    """One line for the plan: the address and its source, or why there is none."""
    endpoint = agent_api_endpoint(spec, facts)
    if endpoint is not None:
        return f"{endpoint} ({SOURCE_NAMES[endpoint.source]})"
    if facts.kube_proxy_present:
        return "unset: agents use the kubernetes Service through kube-proxy"
    return "unknown: nothing publishes it and no kube-proxy carries the kubernetes Service"
