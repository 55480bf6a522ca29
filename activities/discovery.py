"""Discovery: reads a cluster into `ClusterFacts`, read-only, one list per resource kind.

Nothing is assumed: flannel is found by what its DaemonSet runs (the current `kube-flannel`
layout and the older `kube-system` one alike) and its network settings are read from the
ConfigMap its pods mount. Where the nodes reach the API server is read from what the cluster
publishes for them (kubeadm's kube-proxy and cluster-info ConfigMaps), never from this client's
own URL. Decisions about what was found belong to `plan/`, not here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any
from urllib.parse import urlparse

import yaml
from kubernetes.client.rest import ApiException
from temporalio.exceptions import ApplicationError

from activities.drain import empty_dir_volumes, left_in_place
from activities.kubeapi import (
    Kube,
    Obj,
    boot_id,
    condition_true,
    controller_of,
    is_terminating,
    pod_finished,
    unschedulable,
)
from plan.contract import StepError
from plan.facts import (
    ApiEndpoint,
    ApiEndpointSource,
    ClusterFacts,
    ExistingCilium,
    FlannelFacts,
    NamespacedName,
    NodeFacts,
    PodDisruptionBudgetFacts,
    PodFacts,
    Taint,
)

log = logging.getLogger(__name__)

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
ZONE_LABEL = "topology.kubernetes.io/zone"
# DaemonSets that betray another CNI, by the name their manifests give them.
OTHER_CNI_DAEMONSETS = {
    "calico-node": "calico", "canal": "canal", "weave-net": "weave", "aws-node": "aws-vpc-cni",
    "kube-router": "kube-router", "antrea-agent": "antrea",
}
# Kubeconfigs a cluster publishes for its nodes, most specific first: (source, namespace,
# ConfigMap, key). kubeadm writes both; kube-proxy's is what every node's kube-proxy dials, and
# cluster-info is what `kubeadm join` gave each node.
PUBLISHED_KUBECONFIGS: tuple[tuple[ApiEndpointSource, str, str, str], ...] = (
    ("kube-proxy", "kube-system", "kube-proxy", "kubeconfig.conf"),
    ("cluster-info", "kube-public", "cluster-info", "kubeconfig"),
)


class DiscoveryError(ApplicationError):
    """The cluster is not what discovery can read (a malformed flannel config, say).

    Asking again reads the same cluster, so it is typed and non-retryable: raised in the
    discover activity it reaches the workflow as `StepError.DISCOVERY_FAILED` at once, and
    the command line catches it by this class.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, type=StepError.DISCOVERY_FAILED, non_retryable=True)


def discover_cluster(kube: Kube, worker_node: str | None = None) -> ClusterFacts:
    nodes = [_node_facts(n) for n in kube.get("/api/v1/nodes")["items"]]
    daemonsets = kube.get("/apis/apps/v1/daemonsets")["items"]
    api_endpoint, api_endpoint_notes = _published_api_endpoint(kube)
    return ClusterFacts(
        nodes=nodes,
        flannel=_flannel(kube, daemonsets),
        other_cnis=sorted({cni for ds in daemonsets
                           if (cni := OTHER_CNI_DAEMONSETS.get(ds["metadata"]["name"]))}),
        service_cidrs=_service_cidrs(kube),
        existing_cilium=_existing_cilium(daemonsets),
        network_policies=[
            NamespacedName(namespace=p["metadata"]["namespace"], name=p["metadata"]["name"])
            for p in kube.get("/apis/networking.k8s.io/v1/networkpolicies")["items"]],
        pdbs=[_pdb_facts(p) for p in kube.get("/apis/policy/v1/poddisruptionbudgets")["items"]],
        kube_proxy_present=any(_labels(ds).get("k8s-app") == "kube-proxy"
                               or ds["metadata"]["name"] == "kube-proxy" for ds in daemonsets),
        api_endpoint=api_endpoint,
        api_endpoint_notes=api_endpoint_notes,
        worker_node=worker_node,
        pods_drain_may_refuse=_pods_drain_may_refuse(kube),
        server_version=kube.get("/version").get("gitVersion") or None,
        api_versions=_served_api_versions(kube),
    )


def _served_api_versions(kube: Kube) -> list[str]:
    """Every group/version the API server serves ("v1" for the core group), sorted: what a
    chart's `.Capabilities.APIVersions.Has` asks about."""
    served = set(kube.get("/api").get("versions") or [])
    for group in kube.get("/apis").get("groups") or []:
        served.update(v["groupVersion"] for v in group.get("versions") or [])
    return sorted(served)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


def _node_facts(node: Obj) -> NodeFacts:
    labels = _labels(node)
    spec, status = node.get("spec", {}), node.get("status", {})
    addresses = {a["type"]: a["address"] for a in status.get("addresses", [])}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return NodeFacts(
        name=node["metadata"]["name"],
        control_plane=any(label in labels for label in CONTROL_PLANE_LABELS),
        zone=labels.get(ZONE_LABEL),
        schedulable=not unschedulable(node),
        ready=condition_true(node, "Ready"),
        boot_id=boot_id(node),
        pod_cidrs=cidrs,
        internal_ip=addresses.get("InternalIP"),
        taints=[Taint(key=t["key"], value=t.get("value"), effect=t["effect"])
                for t in spec.get("taints") or []],
        labels=labels,
    )


def _runs_flanneld(daemonset: Obj) -> bool:
    containers = daemonset["spec"]["template"]["spec"].get("containers", [])
    return any("flanneld" in " ".join(c.get("command") or []) or
               "flannel" in c.get("image", "").rsplit("/", 1)[-1] for c in containers)


def _flannel(kube: Kube, daemonsets: list[Obj]) -> FlannelFacts | None:
    found = [ds for ds in daemonsets if _runs_flanneld(ds)]
    if not found:
        return None
    daemonset = found[0]
    namespace = daemonset["metadata"]["namespace"]
    volumes = daemonset["spec"]["template"]["spec"].get("volumes") or []
    config_names = [v["configMap"]["name"] for v in volumes if "configMap" in v]
    for name in config_names or ["kube-flannel-cfg"]:
        config_map = kube.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        raw = ((config_map or {}).get("data") or {}).get("net-conf.json")
        if raw is None:
            continue
        try:
            net_conf: dict[str, Any] = json.loads(raw)
            backend = net_conf.get("Backend") or {}
            return FlannelFacts(
                namespace=namespace, daemonset=daemonset["metadata"]["name"],
                network=net_conf["Network"],
                backend_type=str(backend.get("Type", "vxlan")).lower(),
                port=int(backend.get("Port") or 8472), vni=int(backend.get("VNI") or 1))
        except (ValueError, KeyError, TypeError) as error:
            raise DiscoveryError(f"{namespace}/{name}: net-conf.json is not usable "
                                 f"({error}); expected JSON with Network and Backend") from error
    raise DiscoveryError(f"flannel DaemonSet {namespace}/{daemonset['metadata']['name']} found "
                         f"but no ConfigMap with net-conf.json among {config_names}")


def _service_cidrs(kube: Kube) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """ServiceCIDR objects where served (1.33+); else the range around the `kubernetes` IP."""
    listing = kube.get_or_none("/apis/networking.k8s.io/v1/servicecidrs")
    if listing is not None:
        cidrs = [c for item in listing["items"] for c in item["spec"].get("cidrs", [])]
        if cidrs:
            return [ipaddress.ip_network(c) for c in cidrs]
    service = kube.get_or_none("/api/v1/namespaces/default/services/kubernetes")
    cluster_ip = (service or {}).get("spec", {}).get("clusterIP")
    if not cluster_ip:
        return []
    # The API server takes the range's first address; /12 is the kubeadm default range size.
    return [ipaddress.ip_network(f"{cluster_ip}/12", strict=False)]


def _existing_cilium(daemonsets: list[Obj]) -> ExistingCilium | None:
    for ds in daemonsets:
        if _labels(ds).get("k8s-app") == "cilium" or ds["metadata"]["name"] == "cilium":
            containers = ds["spec"]["template"]["spec"].get("containers", [])
            image = containers[0].get("image", "") if containers else ""
            tag = image.split("@", 1)[0].rsplit(":", 1)[-1] if ":" in image else None
            annotations = ds["metadata"].get("annotations") or {}
            return ExistingCilium(namespace=ds["metadata"]["namespace"], version=tag,
                                  release=annotations.get("meta.helm.sh/release-name"))
    return None


def _pdb_facts(pdb: Obj) -> PodDisruptionBudgetFacts:
    selector = pdb.get("spec", {}).get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    terms += [f"{e['key']} {e['operator']} {','.join(e.get('values') or [])}".strip()
              for e in selector.get("matchExpressions") or []]
    status = pdb.get("status", {})
    return PodDisruptionBudgetFacts(
        namespace=pdb["metadata"]["namespace"], name=pdb["metadata"]["name"],
        selector=",".join(terms),
        disruptions_allowed=status.get("disruptionsAllowed", 0),
        current_healthy=status.get("currentHealthy", 0),
        desired_healthy=status.get("desiredHealthy", 0),
        expected_pods=status.get("expectedPods", 0),
    )


def _pods_drain_may_refuse(kube: Kube) -> list[PodFacts]:
    """Every pod, in one list, that a drain refuses under some settings (emptyDir data, no
    controller); which of them it refuses under the spec's settings is preflight's call."""
    found = []
    for pod in kube.get("/api/v1/pods")["items"]:
        node = pod["spec"].get("nodeName")
        if not node or left_in_place(pod) or pod_finished(pod) or is_terminating(pod):
            continue
        empty_dirs, unmanaged = empty_dir_volumes(pod), controller_of(pod) is None
        if empty_dirs or unmanaged:
            found.append(PodFacts(namespace=pod["metadata"]["namespace"],
                                  name=pod["metadata"]["name"], node=node,
                                  empty_dirs=empty_dirs, unmanaged=unmanaged))
    return found


def _published_api_endpoint(kube: Kube) -> tuple[ApiEndpoint | None, list[str]]:
    """The first usable API server address the cluster publishes for its nodes, and why the
    ones before it were not usable. An absent ConfigMap is not worth a note (not kubeadm)."""
    notes: list[str] = []
    for source, namespace, name, key in PUBLISHED_KUBECONFIGS:
        where = f"{namespace}/{name}"
        try:
            config_map = kube.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        except ApiException as error:
            if error.status not in (401, 403):
                raise
            notes.append(f"{where}: not readable with these credentials ({error.status})")
            continue
        if config_map is None:
            continue
        text = (config_map.get("data") or {}).get(key)
        if not isinstance(text, str):
            notes.append(f"{where}: no {key}")
            continue
        try:
            host, port = kubeconfig_server(text)
        except ValueError as error:
            notes.append(f"{where} {key}: {error}")
            continue
        return ApiEndpoint(host=host, port=port, source=source), notes
    return None, notes


def kubeconfig_server(text: str) -> tuple[str, int]:
    """Host and port of the server of a kubeconfig's current (or only) cluster; ValueError
    saying what is wrong when the text is not such a kubeconfig."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"not YAML ({problem})") from None
    if not isinstance(config, dict):
        raise ValueError("not a kubeconfig (expected a mapping)")
    cluster = _current_cluster(config)
    server = cluster.get("server")
    if not isinstance(server, str) or not server.strip():
        raise ValueError("its cluster has no server")
    try:
        url = urlparse(server.strip())
        port = url.port
    except ValueError:
        raise ValueError(f"server {server!r} is not a URL with a valid port") from None
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError(f"server {server!r} is not an https:// URL with a host")
    return url.hostname, port or (443 if url.scheme == "https" else 80)


def _current_cluster(config: dict[Any, Any]) -> dict[str, Any]:
    """The cluster the current context uses; the only cluster when no context says."""
    clusters = _named(config, "clusters", "cluster")
    contexts = _named(config, "contexts", "context")
    context = contexts.get(str(config.get("current-context")))
    if isinstance(context, dict) and str(context.get("cluster")) in clusters:
        chosen = clusters[str(context.get("cluster"))]
    elif len(clusters) == 1:
        [chosen] = clusters.values()
    elif not clusters:
        raise ValueError("no clusters")
    else:
        raise ValueError(f"{len(clusters)} clusters and no current context naming one of them")
    if not isinstance(chosen, dict):
        raise ValueError("its cluster entry is not a mapping")
    return chosen


def _named(config: dict[Any, Any], section: str, field: str) -> dict[str, Any]:
    """A kubeconfig list section (``clusters``, ``contexts``) as name -> entry."""
    entries = config.get(section)
    if not isinstance(entries, list):
        return {}
    return {str(e["name"]): e.get(field) for e in entries
            if isinstance(e, dict) and isinstance(e.get("name"), str)}
