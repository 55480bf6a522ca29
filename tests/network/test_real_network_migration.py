"""A whole migration on a 1+3 real-network sandbox, with the product unchanged: every request
below is a real HTTP request between pods, across flannel's VXLAN, Cilium's tunnel stand-in and
the node routing that joins them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from sandbox.simulator.faults import Fault
from sandbox.toolchain import Toolchain
from tests.conftest import CILIUM_POOL
from tests.helpers import set_fault
from tests.integration.migration_support import (
    activity_context,
    fresh_sandbox,
    in_process_worker,
    migration_spec,
    pod_ips_outside,
    progress_of,
    start_migration,
    wait_progress,
)
from tests.network.real_sandbox import (
    converged_matrix,
    deploy_echo,
    dial_matrix,
    require_real_network,
    wait_for_echo,
)
from workflows.cluster import ClusterMigrationWorkflow
from workflows.messages import DecideRequest, Decision
from workflows.progress import NodeState, Phase

FIRST = "worker-1"


async def test_a_migration_keeps_pods_talking_across_the_two_overlays(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    require_real_network()
    name = "real-network"
    with fresh_sandbox(tmp_path / "state", workers=3, zones=1, network="real") as kube:
        deploy_echo(kube)
        before = wait_for_echo(kube, nodes=4)
        matrix = converged_matrix(kube, before)
        assert all(matrix.values()), f"flannel carries every pair; unreached: {matrix}"

        spec = migration_spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]},
                              rollout={"firstNodes": [FIRST]})
        task_queue = f"real-network-{uuid.uuid4().hex[:8]}"
        async with in_process_worker(temporal_env.client,
                                     activity_context(tmp_path / "state", toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            # The first wave is the first node alone; the next waits at its gate.
            progress = await wait_progress(
                handle, lambda p: p.nodes.get(FIRST) is not None
                and p.nodes[FIRST].state is NodeState.MIGRATED,
                "the first node to be migrated", timeout=600, approver="alice")
            assert sum(s.state is NodeState.MIGRATED for s in progress.nodes.values()) == 1
            mixed = await asyncio.to_thread(wait_for_echo, kube, nodes=4)
            assert pod_ips_outside(kube, [CILIUM_POOL]) != [], "other nodes are on flannel"
            assert mixed[FIRST]["status"]["podIP"].startswith("10.245."), \
                "the migrated node's pod has a Cilium-pool address"
            matrix = await asyncio.to_thread(dial_matrix, kube, mixed)
            assert all(matrix.values()), \
                f"across the overlays, unreached: {[k for k, v in matrix.items() if not v]}"

            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED,
                                "the migration to complete", timeout=900, approver="alice")
            report = await handle.result()
        assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())
        # The monitor's echo pods called each other in every wave, across the overlays once
        # there were two, and not one request failed.
        for wave in report.waves:
            figures = wave.connectivity
            assert figures is not None and figures.unavailable is None, wave
            assert figures.requests > 0 and figures.failed == 0, figures
        assert "flannel-cilium" in report.waves[1].connectivity.by_kind  # type: ignore[union-attr]
        # The canary had no echo pod on Cilium to call: not checked, and said so.
        canary = {c.name: c for c in report.nodes[FIRST].verify}
        assert canary["peer-cilium"].outcome == "not-checked"
        assert canary["dns"].passed and canary["peer-flannel"].passed
        # Finalize removed the echo mesh.
        assert report.echo_mesh is not None and report.echo_mesh_removed
        assert kube.get_or_none(f"/api/v1/namespaces/{report.echo_mesh.namespace}") is None
        # Every node's verify probe called an echo pod on each overlay for real.
        after = wait_for_echo(kube, nodes=4, pool=CILIUM_POOL)
        matrix = dial_matrix(kube, after)
        assert all(matrix.values()), \
            f"on Cilium, unreached: {[k for k, v in matrix.items() if not v]}"


async def test_a_node_that_fails_verify_rolls_back_to_flannel_and_talks_again(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """The rollback on real packets: the probe's packets are dropped for real on the canary,
    verify fails at its deadline, and the operator's rollback puts the node back on flannel,
    where its pods reach every other node again."""
    require_real_network()
    name = "real-network-rollback"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=2, zones=1, network="real") as kube:
        deploy_echo(kube)
        await asyncio.to_thread(wait_for_echo, kube, nodes=3)
        set_fault(state_dir, FIRST, Fault.PROBE_FAILS, True)
        spec = migration_spec(name, approvals={"policy": "none"}, verify={"timeout": "15s"},
                              rollout={"firstNodes": [FIRST]})
        task_queue = f"real-network-{uuid.uuid4().hex[:8]}"
        async with in_process_worker(temporal_env.client,
                                     activity_context(state_dir, toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            blocked = await wait_progress(
                handle, lambda p: p.nodes.get(FIRST) is not None
                and p.nodes[FIRST].state is NodeState.BLOCKED, "the canary to block",
                timeout=600)
            failed = {c.name for c in blocked.nodes[FIRST].verify if c.failed}
            assert "api-server" in failed, "nothing the probe sent got anywhere"

            set_fault(state_dir, FIRST, Fault.PROBE_FAILS, False)
            _ = await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node=FIRST, decision=Decision.ROLLBACK, operator="carol"))
            # The connectivity monitor may halt the run first (the canary dropped packets for
            # real): what counts is the halt the ended rollback leaves.
            halted = await wait_progress(
                handle, lambda p: p.nodes[FIRST].state is NodeState.ROLLED_BACK
                and p.halted is not None, "the run to halt after the rollback", timeout=300)
            assert f"node {FIRST} was rolled-back" in (halted.halted or ""), halted.halted
            pods = await asyncio.to_thread(wait_for_echo, kube, nodes=3)
            assert pods[FIRST]["status"]["podIP"].startswith("10.244."), "back on flannel"
            matrix = await asyncio.to_thread(dial_matrix, kube, pods)
            assert all(matrix.values()), \
                f"after the rollback, unreached: {[k for k, v in matrix.items() if not v]}"
            await handle.cancel()


async def test_a_node_whose_cilium_tunnel_is_blocked_halts_the_rollout_naming_the_pairs(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """A migrated node's firewall starts dropping Cilium's tunnel port: the monitor, watching
    the next wave, sees its echo pod's requests fail and halts the rollout within its window,
    naming the pairs. The abort that follows removes the echo mesh."""
    require_real_network()
    name = "real-network-breakage"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=3, zones=1, network="real") as kube:
        spec = migration_spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]},
                              rollout={"firstNodes": [FIRST]}, connectivity={"window": "30s"})
        task_queue = f"real-network-{uuid.uuid4().hex[:8]}"
        async with in_process_worker(temporal_env.client,
                                     activity_context(state_dir, toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            canary_done = await wait_progress(
                handle, lambda p: p.waves and p.waves[0].state == "done",
                "the canary wave to finish", timeout=600, approver="alice")
            assert canary_done.waves[0].connectivity.failed == 0  # type: ignore[union-attr]
            set_fault(state_dir, FIRST, Fault.CILIUM_TUNNEL_BLOCKED, True)
            halted = await wait_progress(
                handle, lambda p: p.halted is not None and p.halted.startswith("connectivity"),
                "the monitor to halt the rollout", timeout=600, approver="alice")
            wave = next(w for w in halted.waves if w.connectivity and w.connectivity.breached)
            figures = wave.connectivity
            assert figures is not None and figures.failed > spec.connectivity.max_failed_requests
            # Every failed pair has the blocked node's Cilium pod at one end.
            assert figures.failures and all(
                FIRST in (f.source_node, f.target_node) for f in figures.failures)
            reason = halted.halted or ""
            assert f"({FIRST}, 10.245." in reason and "requests failed within 30s" in reason
            later = [w for w in halted.waves if w.index > wave.index]
            assert all(w.state == "pending" for w in later), "no new wave started"

            set_fault(state_dir, FIRST, Fault.CILIUM_TUNNEL_BLOCKED, False)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            final = await progress_of(handle)
        assert final.phase is Phase.CANCELLED
        assert final.echo_mesh is not None and final.echo_mesh_removed
        assert kube.get_or_none(f"/api/v1/namespaces/{final.echo_mesh.namespace}") is None
