"""The simulated sandbox sends no packet to a pod IP: the API server's pod proxy is refused
by the sandbox's egress policy, with the reason."""

from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException

from tests.conftest import Sandbox


def test_the_pod_proxy_refuses_simulated_pod_ips(sandbox: Sandbox) -> None:
    pods = sandbox.kube.get("/api/v1/namespaces/kube-system/pods",
                            labelSelector="k8s-app=kube-dns")["items"]
    pod = next(p for p in pods if p.get("status", {}).get("podIP"))
    with pytest.raises(ApiException) as raised:
        sandbox.kube.request(
            "GET", f"/api/v1/namespaces/kube-system/pods/{pod['metadata']['name']}:53/proxy/")
    body = str(raised.value.body)
    assert raised.value.status == 503
    assert pod["status"]["podIP"] in body and "the simulated network carries no packets" in body
