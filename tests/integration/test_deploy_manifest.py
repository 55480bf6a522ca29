"""The worker's deployment manifest is accepted by a real API server (schema, RBAC rules)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, Sandbox

pytestmark = pytest.mark.sandbox


def test_worker_manifest_passes_server_side_validation(sandbox: Sandbox) -> None:
    sandbox.kube.create("/api/v1/namespaces", {"metadata": {"name": "cilium-migrate"}})
    try:
        result = sandbox.kubectl("apply", "--dry-run=server", "-f",
                                 str(REPO / "deploy" / "worker.yaml"), check=False)
    finally:
        sandbox.kube.delete("/api/v1/namespaces/cilium-migrate")
    assert result.returncode == 0, result.stderr
    for kind in ("serviceaccount/cilium-migrate-worker", "clusterrole.rbac.authorization.k8s.io/"
                 "cilium-migrate-worker", "deployment.apps/cilium-migrate-worker"):
        assert kind in result.stdout
