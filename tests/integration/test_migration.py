"""Whole migrations: real activities on a fresh sandbox, a real Temporal server.

Each scenario gets its own cluster (a migration changes a cluster for good) and its own task
queue. Set CILIUM_MIGRATE_RECORD_HISTORIES=1 to save the histories for the replay tests.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from activities.kubeapi import Kube
from plan.contract import CORDONED_BY_ANNOTATION, MIGRATION_LABEL
from sandbox.simulator.faults import Fault
from sandbox.toolchain import Toolchain
from tests.helpers import set_fault, wait_for
from tests.integration.migration_support import (
    WorkerProcess,
    activity_context,
    fresh_sandbox,
    in_process_worker,
    migration_spec,
    pod_ips_outside,
    progress_of,
    record_history,
    slow_pod_node,
    start_migration,
    wait_progress,
)
from workflows.cluster import ClusterMigrationWorkflow
from workflows.messages import DecideRequest, Decision, PauseRequest
from workflows.progress import NodeState, NodeStep, Phase

pytestmark = pytest.mark.sandbox

CILIUM_POOL = "10.245.0.0/16"


def spread_workload(kube: Kube, namespace: str, replicas: int) -> None:
    """A Deployment with pods on every node (control plane too) and a PDB allowing one."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 2,
                     "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                      "effect": "NoSchedule"}],
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": {"app": "web"}}}],
                     "containers": [{"name": "web", "image": "nginx"}]}}}})
    kube.create(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", {
        "metadata": {"name": "web-pdb"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}})


def running_pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]
    return [p for p in pods if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def single_db(kube: Kube) -> str:
    """One `data/db` pod (a Deployment of one); returns the node it runs on."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": "data"}})
    kube.create("/apis/apps/v1/namespaces/data/deployments", {
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "db", "image": "postgres"}]}}}})
    return str(wait_for(lambda: (p := running_pods(kube, "data", "app=db")) and
                        p[0]["spec"]["nodeName"], "db pod"))


def budget_allowing_no_disruption(kube: Kube) -> None:
    """A PDB over the single db pod that needs it up: no eviction passes while it stands."""
    kube.create("/apis/policy/v1/namespaces/data/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})


def boot_ids(kube: Kube) -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["bootID"]
            for n in kube.get("/api/v1/nodes")["items"]}


def queue() -> str:
    return f"mig-{uuid.uuid4().hex[:8]}"


async def test_happy_path_with_per_wave_approvals(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "happy"
    with fresh_sandbox(tmp_path / "state", workers=5, zones=3) as kube:
        spread_workload(kube, "shop", replicas=12)
        wait_for(lambda: len(running_pods(kube, "shop", "app=web")) == 12, "web pods", 120)
        before = boot_ids(kube)
        spec = migration_spec(name, approvals={"policy": "per-wave", "approvers": ["alice"]},
                              rollout={"maxUnavailable": 2})
        task_queue = queue()
        async with in_process_worker(temporal_env.client,
                                     activity_context(tmp_path / "state", toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED,
                                "the migration to complete", timeout=420, approver="alice")
            report = await handle.result()
            await record_history(handle)

        after = boot_ids(kube)
        nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes")["items"]}
        assert all(after[n] != before[n] for n in nodes), "every node rebooted"
        assert all(report.nodes[n].boot_id_before == before[n] and
                   report.nodes[n].boot_id_after == after[n] for n in nodes), \
            "each node rebooted exactly once (the boot it ended with is the first new one)"
        for node in nodes.values():
            assert node["metadata"]["labels"].get(MIGRATION_LABEL) == "true"
            assert not node["spec"].get("unschedulable")
            assert CORDONED_BY_ANNOTATION not in (node["metadata"].get("annotations") or {})
        assert pod_ips_outside(kube, [CILIUM_POOL]) == []
        assert kube.get_or_none("/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs/"
                                "cilium-default") is None
        assert kube.get_or_none("/api/v1/namespaces/kube-flannel") in (None,) or \
            kube.get("/api/v1/namespaces/kube-flannel")["metadata"].get("deletionTimestamp")
        assert kube.get_or_none("/apis/apps/v1/namespaces/kube-flannel/daemonsets/"
                                "kube-flannel-ds") is None
        config = kube.get("/api/v1/namespaces/kube-system/configmaps/cilium-config")["data"]
        assert config["custom-cni-conf"] == "false" and config["enable-policy"] == "default"
        assert config["tunnel-port"] == "8473"
        assert report.phase is Phase.COMPLETED
        assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())
        gates = [a.gate for a in report.approvals]
        assert gates[0] == "install" and gates[-2:] == ["finalize", "remove-flannel"]
        assert [g for g in gates if g.startswith("wave-")] == [
            f"wave-{w.index}" for w in report.waves]
        assert all(a.approver == "alice" and a.reason for a in report.approvals)
        assert all(len(w.nodes) <= 2 for w in report.waves)


async def test_a_pdb_blocks_a_drain_until_scaled_and_retried(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "pdb"
    with fresh_sandbox(tmp_path / "state", workers=2, zones=1) as kube:
        db_node = single_db(kube)
        # The drain reports a block when its deadline passes: keep the deadline short here.
        spec = migration_spec(name, approvals={"policy": "per-phase"},
                              rollout={"firstNodes": [db_node]}, drain={"timeout": "15s"})
        task_queue = queue()
        async with in_process_worker(temporal_env.client,
                                     activity_context(tmp_path / "state", toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: "install" in p.pending_gates, "install gate")
            # After preflight: a budget that allows no disruption appears.
            budget_allowing_no_disruption(kube)
            blocked = await wait_progress(
                handle, lambda p: p.nodes.get(db_node) and
                p.nodes[db_node].state is NodeState.BLOCKED, "the drain to block",
                approver="bob", timeout=300)
            node = blocked.nodes[db_node]
            assert node.step is NodeStep.DRAIN
            assert node.blockers and node.blockers[0].pdb == "data/db-pdb"
            assert node.blockers[0].pod.startswith("data/db-")
            assert any("data/db-pdb" in line for line in blocked.blockers)
            assert kube.get(f"/api/v1/nodes/{db_node}")["spec"].get("unschedulable")

            kube.patch("/apis/apps/v1/namespaces/data/deployments/db", {"spec": {"replicas": 2}})
            wait_for(lambda: kube.get("/apis/policy/v1/namespaces/data/poddisruptionbudgets/"
                                      "db-pdb")["status"].get("disruptionsAllowed") == 1,
                     "the PDB to allow a disruption", 120)
            await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node=db_node, decision=Decision.RETRY, operator="bob"))
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion",
                                timeout=420, approver="bob")
            report = await handle.result()
            await record_history(handle)
        assert report.nodes[db_node].state is NodeState.MIGRATED


async def test_failed_verification_stops_new_waves_and_rollback_restores_flannel(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "verify"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=4, zones=1) as kube:
        # The bad node's probe is repeated until the verify deadline: keep it short here.
        spec = migration_spec(name, approvals={"policy": "none"}, verify={"timeout": "20s"},
                              rollout={"maxUnavailable": 2,
                                       "firstNodes": ["worker-1", "worker-2", "worker-3"]})
        bad = "worker-3"  # the canary is worker-1; wave 2 holds worker-2 and worker-3
        set_fault(state_dir, bad, Fault.PROBE_FAILS, True)
        task_queue = queue()
        async with in_process_worker(temporal_env.client,
                                     activity_context(state_dir, toolchain, name), task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            blocked = await wait_progress(
                handle, lambda p: p.nodes.get(bad) and p.nodes[bad].state is NodeState.BLOCKED
                and p.nodes["worker-2"].state is NodeState.MIGRATED,
                "the bad node to block while the rest of its wave finishes", timeout=420)
            assert blocked.nodes[bad].step is NodeStep.VERIFY
            assert not all(c.passed for c in blocked.nodes[bad].verify)
            assert kube.get(f"/api/v1/nodes/{bad}")["spec"].get("unschedulable")
            assert blocked.nodes["worker-4"].state is NodeState.PENDING  # no new wave

            set_fault(state_dir, bad, Fault.PROBE_FAILS, False)
            await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node=bad, decision=Decision.ROLLBACK, operator="carol"))
            halted = await wait_progress(handle, lambda p: p.halted is not None,
                                         "the run to halt after the rollback", timeout=300)
            assert halted.nodes[bad].state is NodeState.ROLLED_BACK
            assert halted.nodes["worker-4"].state is NodeState.PENDING
            node = kube.get(f"/api/v1/nodes/{bad}")
            assert not node["spec"].get("unschedulable")
            assert MIGRATION_LABEL not in node["metadata"]["labels"]
            cni = sorted(p.name for p in (state_dir / "nodes" / bad / "etc/cni/net.d").iterdir())
            assert cni == ["10-flannel.conflist"]
            flannel_ips = [c for c in halted.nodes[bad].verify if c.name == "pod-ip-in-pool"]
            assert flannel_ips and flannel_ips[0].passed

            # Still waiting for the operator; an abort now leaves nothing cordoned.
            assert (await progress_of(handle)).halted
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            assert (await progress_of(handle)).phase is Phase.CANCELLED
            for node in kube.get("/api/v1/nodes")["items"]:
                assert not node["spec"].get("unschedulable"), node["metadata"]["name"]
                assert CORDONED_BY_ANNOTATION not in (node["metadata"].get("annotations") or {})
            await record_history(handle, nodes=(bad,))


async def test_worker_crashes_during_drain_and_reboot_do_not_reboot_twice(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    name = "crash"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=2, zones=1) as kube:
        canary = slow_pod_node(kube, state_dir)  # the canary's drain stays busy a while
        before = boot_ids(kube)
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"firstNodes": [canary]})
        task_queue = queue()
        address = temporal_env.client.service_client.config.target_host
        workers = [WorkerProcess(address, task_queue, state_dir, toolchain, name,
                                 tmp_path / f"worker-{i}.log") for i in range(3)]
        workers[0].start()
        try:
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: p.nodes.get(canary) and
                                p.nodes[canary].step is NodeStep.DRAIN, "the drain", 300)
            wait_for(lambda: any(p["metadata"].get("deletionTimestamp") for p in
                                 kube.get("/api/v1/namespaces/slow/pods")["items"]),
                     "the eviction to be under way", 60)
            workers[0].kill()
            set_fault(state_dir, canary, Fault.REBOOT_NEVER_COMPLETES, True)
            workers[1].start()
            await wait_progress(handle, lambda p: p.nodes[canary].step is NodeStep.REBOOT,
                                "the reboot", 300)
            wait_for(lambda: not any(c["type"] == "Ready" and c["status"] == "True" for c in
                                     kube.get(f"/api/v1/nodes/{canary}")["status"]
                                     ["conditions"]), "the node to go down", 120)
            workers[1].kill()
            set_fault(state_dir, canary, Fault.REBOOT_NEVER_COMPLETES, False)  # power comes on
            workers[2].start()
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion", 900)
            report = await handle.result()
            await record_history(handle)
        finally:
            for worker in workers:
                worker.stop()
        assert report.nodes[canary].boot_id_before == before[canary]
        assert report.nodes[canary].boot_id_after == boot_ids(kube)[canary]
        assert all(s.state is NodeState.MIGRATED for s in report.nodes.values())


async def test_pause_stops_new_nodes_until_resume(temporal_env: Any) -> None:
    """Pause and resume reach a running workflow and are validated (no cluster needed)."""
    from tests.fakes import FakeCluster
    from tests.workflows.support import spec
    from worker.build import build_worker

    fake = FakeCluster(workers=2)
    task_queue = queue()
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start_migration(temporal_env.client,
                                       spec(f"pause-{task_queue}",
                                            approvals={"policy": "per-phase"}), task_queue)
        await wait_progress(handle, lambda p: "rollout" in p.pending_gates, "rollout gate",
                            approver="dave")
        await handle.execute_update(ClusterMigrationWorkflow.pause, PauseRequest(operator="d"))
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(ClusterMigrationWorkflow.pause, PauseRequest())
        assert "already paused" in str(rejected.value.cause)
        paused = await wait_progress(handle, lambda p: p.pending_gates == [],
                                     "the rollout approval", approver="dave")
        assert paused.paused
        assert all(n.state is NodeState.PENDING for n in paused.nodes.values())
        await handle.execute_update(ClusterMigrationWorkflow.resume, PauseRequest(operator="d"))
        report = await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion",
                                     approver="dave")
    assert all(n.state is NodeState.MIGRATED for n in report.nodes.values())


async def test_rollback_after_a_blocked_drain_uncordons_without_a_reboot(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """Nothing was switched, so nothing is undone but the cordon: a node still holding a
    PDB-protected pod is never rebooted by a rollback."""
    name = "undrained"
    with fresh_sandbox(tmp_path / "state", workers=2, zones=1) as kube:
        db_node = single_db(kube)
        before = boot_ids(kube)
        spec = migration_spec(name, approvals={"policy": "per-phase"},
                              rollout={"firstNodes": [db_node]}, drain={"timeout": "10s"})
        task_queue = queue()
        async with in_process_worker(temporal_env.client,
                                     activity_context(tmp_path / "state", toolchain, name),
                                     task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            await wait_progress(handle, lambda p: "install" in p.pending_gates, "install gate")
            # After preflight (which would refuse it): a budget that allows no disruption.
            budget_allowing_no_disruption(kube)
            await wait_progress(handle, lambda p: p.nodes.get(db_node) and
                                p.nodes[db_node].state is NodeState.BLOCKED,
                                "the drain to block", approver="dave", timeout=300)
            await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node=db_node, decision=Decision.ROLLBACK, operator="dave"))
            halted = await wait_progress(handle, lambda p: p.halted is not None,
                                         "the halt after the rollback", timeout=300)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        assert halted.nodes[db_node].state is NodeState.ROLLED_BACK
        assert boot_ids(kube)[db_node] == before[db_node]  # not rebooted
        node = kube.get(f"/api/v1/nodes/{db_node}")
        assert not node["spec"].get("unschedulable")
        assert MIGRATION_LABEL not in node["metadata"]["labels"]
        assert running_pods(kube, "data", "app=db")[0]["spec"]["nodeName"] == db_node


async def test_finalize_waits_while_an_excluded_node_still_runs_flannel(
        temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """Finalizing would switch the excluded node without a drain or a reboot and remove
    flannel under its pods: the run waits for the operator to migrate it."""
    name = "excluded"
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=3, zones=1) as kube:
        spec = migration_spec(name, approvals={"policy": "none"},
                              rollout={"excludeNodes": ["worker-3"]})
        task_queue = queue()
        async with in_process_worker(temporal_env.client,
                                     activity_context(state_dir, toolchain, name), task_queue):
            handle = await start_migration(temporal_env.client, spec, task_queue)
            refused = await wait_progress(handle, lambda p: bool(p.not_migrated),
                                          "finalize to refuse", timeout=420)
            assert refused.not_migrated == {"worker-3": "excluded"}
            assert refused.phase is Phase.MIGRATING
            assert kube.get_or_none(
                "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds") is not None
            cni = sorted(p.name for p in (state_dir / "nodes/worker-3/etc/cni/net.d").iterdir())
            assert cni == ["10-flannel.conflist"]
            await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node="worker-3", decision=Decision.RETRY, operator="erin"))
            await wait_progress(handle, lambda p: p.phase is Phase.COMPLETED, "completion",
                                timeout=420)
            report = await handle.result()
            await record_history(handle, nodes=("worker-3",))
        assert report.nodes["worker-3"].state is NodeState.MIGRATED
        assert pod_ips_outside(kube, [CILIUM_POOL]) == []
