"""The API client keeps a connection for every step the worker runs at once: each running
step may hold one open on a watch, and a pool smaller than that opens (TLS handshake and all)
and throws away a connection for every request past it."""

from __future__ import annotations

from pathlib import Path

from activities.kubeapi import Kube
from worker.build import MAX_CONCURRENT_ACTIVITIES

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_connection_pool_holds_every_step_the_worker_runs_at_once(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    pool = Kube(str(kubeconfig)).api.rest_client.pool_manager
    assert pool.connection_pool_kw["maxsize"] >= MAX_CONCURRENT_ACTIVITIES
