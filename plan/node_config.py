"""The per-node override of the procedure's Phase 2: the CiliumNodeConfig that makes an agent on
a labelled node write its CNI config and take the node over, and which API serves it."""

from __future__ import annotations

from plan.contract import NodeConfigInput
from plan.policies import cluster_ref
from plan.rules.values import NODE_CONFIG_V2
from plan.spec import CiliumSpec, MigrationSpec

NODE_CONFIG_NAME = "cilium-default"
# What an agent on a labelled node reads at start: write Cilium's CNI config once Ready, own the
# node's CNI exclusively, and chain nothing.
NODE_CONFIG_DEFAULTS = {
    "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
    "custom-cni-conf": "false",
    "cni-chaining-mode": "none",
    "cni-exclusive": "true",
}


def node_config_api(cilium: CiliumSpec) -> str:
    """CiliumNodeConfig moved to cilium.io/v2 in Cilium 1.16; v2alpha1 before that."""
    return "cilium.io/v2" if cilium.version_tuple >= NODE_CONFIG_V2 else "cilium.io/v2alpha1"


def node_config(spec: MigrationSpec) -> NodeConfigInput:
    """The CiliumNodeConfig to apply before the first node moves, and delete at finalize."""
    return NodeConfigInput(cluster=cluster_ref(spec.cluster), namespace=spec.cilium.namespace,
                           name=NODE_CONFIG_NAME, api_version=node_config_api(spec.cilium),
                           defaults=NODE_CONFIG_DEFAULTS)
