"""What kubeadm publishes while it bootstraps a cluster to tell nodes where the API server is.

The admin kubeconfig says https://127.0.0.1:PORT, which only this machine can use. The nodes
reach the API server at its advertise address, and a kubeadm cluster says so in three places,
recreated here with the sandbox's own address:

- ConfigMap ``kube-system/kube-proxy``, key ``kubeconfig.conf``: the kubeconfig kube-proxy runs
  with on every node (kubeadm's ``addons/proxy`` phase);
- ConfigMap ``kube-public/cluster-info``, key ``kubeconfig``: what ``kubeadm join`` reads
  (the ``bootstrap-token`` phase);
- the ``default/kubernetes`` Endpoints and EndpointSlice behind the ClusterIP, which the API
  server maintains itself on a real cluster (its endpoint reconciler is off here, see
  `sandbox.controlplane`).

The node simulator takes the address from ``topology.json``, not from these objects, so a
mistake here shows as agents that cannot reach the API server.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from activities.kubeapi import Kube, Obj
from sandbox.topology import CLUSTER_CIDR, ApiServerAddress

# Where kubeadm's kube-proxy DaemonSet mounts its ConfigMap (cluster-addons.yaml does the same).
KUBE_PROXY_CONFIG_DIR = "/var/lib/kube-proxy"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def publish_api_server(kube: Kube, address: ApiServerAddress, ca_cert: Path) -> None:
    """Creates the objects above; existing ones are left as they are."""
    for namespace in ("kube-system", "kube-public"):
        kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    kube.create("/api/v1/namespaces/kube-system/configmaps", kube_proxy_config_map(address))
    kube.create("/api/v1/namespaces/kube-public/configmaps",
                cluster_info_config_map(address, ca_cert.read_bytes()))
    kube.create("/api/v1/namespaces/default/endpoints", _endpoints(address))
    kube.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                _endpoint_slice(address))


def kube_proxy_config_map(address: ApiServerAddress) -> Obj:
    """kube-proxy's settings and kubeconfig; it authenticates with its service account."""
    kubeconfig = _kubeconfig(f"https://{address}", {
        "certificate-authority": f"{SERVICE_ACCOUNT_DIR}/ca.crt"},
        user={"tokenFile": f"{SERVICE_ACCOUNT_DIR}/token"})
    settings = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": f"{KUBE_PROXY_CONFIG_DIR}/kubeconfig.conf"},
        "clusterCIDR": CLUSTER_CIDR,
        "mode": "iptables",
    }
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "labels": {"app": "kube-proxy"}},
        "data": {"config.conf": yaml.safe_dump(settings, sort_keys=False),
                 "kubeconfig.conf": yaml.safe_dump(kubeconfig, sort_keys=False)},
    }


def cluster_info_config_map(address: ApiServerAddress, ca_pem: bytes) -> Obj:
    """The public bootstrap kubeconfig: the server and its CA, no credentials."""
    kubeconfig = _kubeconfig(f"https://{address}", {
        "certificate-authority-data": base64.b64encode(ca_pem).decode()})
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-info"},
        "data": {"kubeconfig": yaml.safe_dump(kubeconfig, sort_keys=False)},
    }


def _kubeconfig(server: str, trust: dict[str, str], user: dict[str, str] | None = None) -> Obj:
    config: Obj = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "default", "cluster": {**trust, "server": server}}],
    }
    if user is not None:
        config["users"] = [{"name": "default", "user": user}]
        config["contexts"] = [{"name": "default", "context": {
            "cluster": "default", "namespace": "default", "user": "default"}}]
        config["current-context"] = "default"
    return config


def _endpoints(address: ApiServerAddress) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        # The slice below is written directly, as the API server does: no mirrored copy.
        "metadata": {"name": "kubernetes",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.host}],
                     "ports": [{"name": "https", "port": address.port, "protocol": "TCP"}]}],
    }


def _endpoint_slice(address: ApiServerAddress) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address.host], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": address.port, "protocol": "TCP"}],
    }
