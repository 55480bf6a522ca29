"""A whole migration whose every API request (the steps' and Helm's) is made as the worker
chart's ServiceAccount, on a sandbox with real RBAC: the permissions the chart ships are the
ones the product needs. The Helm binding is held only for the install and finalize phases, as
the README tells operators to do, so the node steps run on the steps' rights alone."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from activities.context import ActivityContext
from plan.contract import MIGRATION_LABEL
from sandbox.toolchain import Toolchain
from tests.integration.migration_support import (
    fresh_sandbox,
    in_process_worker,
    migration_spec,
    wait_progress,
)
from tests.integration.migration_support import start_migration as start
from tests.integration.worker_chart import (
    can_i,
    install,
    requests_of,
    service_account_kubeconfig,
)
from workflows.cluster import ClusterMigrationWorkflow
from workflows.messages import ApproveRequest
from workflows.progress import NodeState, Phase

pytestmark = pytest.mark.sandbox


async def approve(handle: WorkflowHandle[Any, Any], gate: str) -> None:
    await wait_progress(handle, lambda p: gate in p.pending_gates, f"gate {gate}", timeout=420)
    await handle.execute_update(ClusterMigrationWorkflow.approve, ApproveRequest(
        gate=gate, approver="alice", reason=f"reviewed {gate}"), id=f"approve-{gate}")


async def test_a_migration_runs_with_the_charts_permissions_only(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "rbac"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=3, zones=1) as kube:
        admin = state_dir / "kubeconfig"
        values = {"clusterName": name}
        install(toolchain, admin, tmp_path, values)
        worker = service_account_kubeconfig(toolchain, admin, tmp_path / "worker.kubeconfig")
        assert not can_i(toolchain, worker, "delete", "nodes")
        context = ActivityContext(kubeconfigs={name: str(worker)}, helm=str(toolchain["helm"]))
        spec = migration_spec(name, approvals={"policy": "per-phase", "approvers": ["alice"]})
        task_queue = f"rbac-{uuid.uuid4().hex[:8]}"
        async with in_process_worker(temporal_env.client, context, task_queue):
            handle = await start(temporal_env.client, spec, task_queue)
            await approve(handle, "install")
            # Cilium is installed once the rollout gate opens: the nodes move without Helm's
            # rights, which come back for finalize's upgrade only.
            await wait_progress(handle, lambda p: "rollout" in p.pending_gates, "rollout gate",
                                timeout=420)
            install(toolchain, admin, tmp_path, {**values, "helmBinding": {"enabled": False}})
            await approve(handle, "rollout")
            await wait_progress(handle, lambda p: "finalize" in p.pending_gates,
                                "every node migrated", timeout=600)
            install(toolchain, admin, tmp_path, values)
            await approve(handle, "finalize")
            await approve(handle, "remove-flannel")
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion",
                                timeout=420)
            report = await handle.result()
        install(toolchain, admin, tmp_path, {**values, "helmBinding": {"enabled": False}})

        assert report.phase is Phase.COMPLETED
        assert all(n.state is NodeState.MIGRATED for n in report.nodes.values())
        nodes = kube.get("/api/v1/nodes")["items"]
        assert len(report.nodes) == len(nodes)
        assert all(n["metadata"]["labels"].get(MIGRATION_LABEL) == "true" for n in nodes)
        assert kube.get_or_none("/apis/apps/v1/namespaces/kube-flannel/daemonsets/"
                                "kube-flannel-ds") is None
        release = kube.get("/api/v1/namespaces/kube-system/secrets",
                           labelSelector="owner=helm,name=cilium")["items"]
        assert sorted(s["metadata"]["labels"]["status"] for s in release) == [
            "deployed", "superseded"], "installed, then upgraded at finalize"
        assert not can_i(toolchain, worker, "list", "secrets", "kube-system")
        # Nothing was refused, not even what a step shrugs off (an Event, an optional read).
        asked = requests_of(state_dir)
        assert {"pods/eviction", "nodes", "ciliumnodeconfigs", "secrets"} <= {
            r.resource for r in asked}, "the steps' and Helm's requests were the account's"
        refused = sorted({(r.verb, r.resource, r.namespace) for r in asked if r.code == 403},
                         key=str)
        assert not refused, refused
