"""CoreDNS in a pod of the real network: which containers run it, and the one change its
Corefile needs there.

A CoreDNS container is one whose image is ``coredns`` (``registry.k8s.io/coredns/coredns:vX``,
``coredns/coredns``), as kubeadm's Deployment runs it: ``-conf /etc/coredns/Corefile`` from the
``coredns`` ConfigMap. Its ``kubernetes`` plugin would use client-go's in-cluster config (the
service account token the kubelet mounts under /var/run/secrets); processes here share the
machine's filesystem, so the runtime gives it a kubeconfig holding that token instead, with the
plugin's documented ``kubeconfig KUBECONFIG`` option (coredns ``plugin/kubernetes/README.md``).
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.images import image_name

_KUBERNETES_BLOCK = re.compile(r"^(?P<indent>[ \t]*)kubernetes\b(?P<args>[^{\n]*)(?P<brace>\{?)",
                               re.MULTILINE)


def is_coredns(container: dict[str, Any]) -> bool:
    return image_name(container) == "coredns"


def with_kubeconfig(corefile: str, kubeconfig: str) -> str:
    """``corefile`` with ``kubeconfig KUBECONFIG`` first in every ``kubernetes`` block (a
    block is opened for a ``kubernetes`` line without one)."""
    def add(match: re.Match[str]) -> str:
        indent, args = match["indent"], match["args"].rstrip()
        option = f"{indent}    kubeconfig {kubeconfig}"
        if match["brace"]:
            return f"{indent}kubernetes{args} {{\n{option}"
        return f"{indent}kubernetes{args} {{\n{option}\n{indent}}}"
    return _KUBERNETES_BLOCK.sub(add, corefile)
