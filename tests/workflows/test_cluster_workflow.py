"""The migration workflows on a real Temporal server, with activities replaced at the activity
boundary (same names) by a small in-memory cluster (tests/fakes.py). Fast, and precise about
orchestration: gates, decisions, pause, abort and the rejected Updates."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from tests.fakes import FakeCluster
from tests.workflows.support import approve_all, history_length, progress, spec, start, until
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.messages import ApproveRequest, DecideRequest, Decision
from workflows.progress import NodeState, Phase


@pytest.fixture
def task_queue() -> str:
    return f"wf-{uuid.uuid4().hex[:8]}"


async def test_per_wave_approvals_migrate_every_node_once(temporal_env: Any,
                                                          task_queue: str) -> None:
    fake = FakeCluster(workers=4)
    migration = spec(f"happy-{task_queue}", approvals={"policy": "per-wave",
                                                       "approvers": ["alice"]},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await approve_all(handle)
        report = await handle.result()

    assert report.phase is Phase.COMPLETED
    assert {n: s.state for n, s in report.nodes.items()} == dict.fromkeys(fake.nodes,
                                                                          NodeState.MIGRATED)
    assert fake.boot == dict.fromkeys(fake.nodes, 1)  # every node rebooted exactly once
    assert not fake.cordoned
    assert [w.nodes for w in report.waves][-1] == ["cp-1"]  # control plane last
    gates = [a.gate for a in report.approvals]
    assert gates == ["install", *(f"wave-{w.index}" for w in report.waves), "finalize",
                     "remove-flannel"]
    assert all(a.approver == "alice" and a.at for a in report.approvals)
    assert fake.helm_values[0]["tunnelPort"] == 8473
    assert fake.helm_values[1]["cni"]["customConf"] is False
    # The chart the last Helm step reported is kept for the status view and the report.
    assert report.chart == fake.installed_charts[-1]
    assert (report.chart.name, report.chart.version, report.chart.source) == (
        "cilium", migration.cilium.version, migration.cilium.chart.repo)
    # The chart was rendered once, before the install, with exactly the values installed.
    assert [(r.install_values, r.final_values) for r in fake.rendered] == [
        (fake.helm_values[0], fake.helm_values[1])]
    assert ("cni.customConf", True, False) in [tuple(d) for d in report.values_diff]
    assert fake.calls[("remove-flannel", "-")] == 1
    # The echo mesh came before the first node moved, every wave was watched while its nodes
    # moved, and finalize removed the mesh before it switched the cluster over.
    steps = [step for step, _ in fake.log]
    assert steps.index("deploy-echo-mesh") < steps.index("cordon")
    assert steps.index("remove-echo-mesh") > max(
        i for i, step in enumerate(steps) if step == "uncordon")
    assert steps.index("remove-echo-mesh") < steps.index("rollout-restart")
    assert fake.echo_mesh is None and report.echo_mesh_removed
    assert report.echo_mesh is not None and report.echo_mesh.ready == len(fake.nodes)
    for wave in report.waves:
        assert fake.calls[(f"monitor-wave-{wave.index}", "-")] == 1
        figures = wave.connectivity
        assert figures is not None and figures.requests > 0 and figures.failed == 0


async def test_a_value_the_chart_refuses_ends_the_run_at_preflight(
        temporal_env: Any, task_queue: str) -> None:
    """The chart judges the values before preflight decides: what it refuses is a blocking
    finding with its own words, and nothing is installed."""
    fake = FakeCluster(workers=2)
    fake.chart_refuses["install"] = "tunnel was deprecated in v1.14 and has been removed in v1.15."
    migration = spec(f"refused-{task_queue}", approvals={"policy": "none"},
                     cilium={"extraValues": {"tunnel": "vxlan"}})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        final = await progress(handle)

    assert final.phase is Phase.FAILED
    refused = [f for f in final.findings if f.id == "chart-rejects-install-values"]
    assert [f.severity for f in refused] == ["blocking"]
    assert refused[0].message.endswith(": " + fake.chart_refuses["install"])
    assert refused[0].remedy.startswith("Change or remove tunnel in cilium.extraValues")
    assert "chart-rejects-install-values" in str(failure.value.cause)
    assert fake.rendered[0].install_values["tunnel"] == "vxlan"
    assert fake.helm_values == []  # helm_upgrade never ran
    assert not fake.log  # no node was touched


async def test_rejected_updates_leave_no_history(temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    migration = spec(f"reject-{task_queue}", approvals={"policy": "per-wave",
                                                        "approvers": ["alice"]})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.pending_gates == ["install"], "the install gate")
        before = await history_length(handle)
        rejected = [
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="wave-1", approver="alice"),
             "not pending yet"),
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="install", approver="mallory"),
             "may not approve"),
            (ClusterMigrationWorkflow.approve, ApproveRequest(gate="nonsense", approver="alice"),
             "no gate 'nonsense'"),
            (ClusterMigrationWorkflow.decide, DecideRequest(node="worker-9",
                                                            decision=Decision.RETRY),
             "no node 'worker-9'"),
            (ClusterMigrationWorkflow.decide, DecideRequest(node="worker-1",
                                                            decision=Decision.RETRY),
             "not waiting for a decision"),
        ]
        for update, request, message in rejected:
            with pytest.raises(WorkflowUpdateFailedError) as error:
                await handle.execute_update(update, request)
            assert message in str(error.value.cause)
        assert await history_length(handle) == before
        await handle.cancel()


async def test_a_blocked_drain_waits_for_a_decision_then_retries(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.drain_blocked.add("worker-1")
    migration = spec(f"blocked-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-1"].state is NodeState.BLOCKED, "a blocked node")
        node = blocked.nodes["worker-1"]
        assert node.blockers[0].pod == "t/db-0" and node.blockers[0].pdb == "t/db-pdb"
        assert "node worker-1: drain: pod t/db-0 blocked by PDB t/db-pdb" in " ".join(
            blocked.blockers)
        fake.drain_blocked.clear()
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-1", decision=Decision.RETRY))
        report = await handle.result()
    assert report.nodes["worker-1"].state is NodeState.MIGRATED
    assert fake.calls[("drain", "worker-1")] == 2


async def test_failed_verification_halts_and_rollback_returns_the_node(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=3)
    fake.verify_fails.add("worker-2")
    migration = spec(f"rollback-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 2})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        blocked = await until(handle, lambda p: p.nodes and
                              p.nodes["worker-2"].state is NodeState.BLOCKED, "verify failure")
        assert blocked.nodes["worker-2"].verify[0].name == "api-server"
        before_rollback = len(fake.log)
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-2", decision=Decision.ROLLBACK))
        halted = await until(handle, lambda p: p.halted is not None, "the halt")
        assert "worker-2 was rolled-back" in halted.halted
        assert halted.nodes["worker-2"].state is NodeState.ROLLED_BACK
        later = [w for w in halted.waves if w.state == "pending"]
        assert later and all(halted.nodes[n].state is NodeState.PENDING
                             for w in later for n in w.nodes)
        rollback = [step for step, node in fake.log[before_rollback:] if node == "worker-2"]
        # The live agent must have restarted without the override before flannel's config is
        # restored (it rewrites the directory otherwise), and the reboot comes after a drain.
        assert rollback == ["drain", "unlabel", "restart-agent", "host:rollback", "snapshot",
                            "reboot", "verify-flannel", "uncordon"]
        assert "worker-2" not in fake.cordoned and "worker-2" not in fake.labelled

        # Every other node migrates; finalize then waits for the rolled-back one.
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        refused = await until(handle, lambda p: bool(p.not_migrated), "finalize to refuse")
        assert refused.not_migrated == {"worker-2": "rolled-back"}
        assert "finalize waits for every node to run Cilium" in (refused.halted or "")
        assert fake.calls[("rollout-restart", "-")] == 0  # nothing of finalize ran
        with pytest.raises(WorkflowUpdateFailedError) as refusal:
            await handle.execute_update(ClusterMigrationWorkflow.decide, DecideRequest(
                node="worker-2", decision=Decision.SKIP))
        assert "only retry (migrate it now) is possible" in str(refusal.value.cause)
        fake.verify_fails.clear()
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-2", decision=Decision.RETRY))
        report = await handle.result()
    assert report.phase is Phase.COMPLETED
    assert report.nodes["worker-2"].state is NodeState.MIGRATED
    assert report.not_migrated == {}
    assert fake.calls[("verify-flannel", "worker-2")] == 1


async def test_rollback_after_a_blocked_drain_only_uncordons(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.drain_blocked.add("worker-1")
    migration = spec(f"undrained-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.nodes and p.nodes["worker-1"].state is NodeState.BLOCKED,
                    "the blocked drain")
        before = len(fake.log)
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-1", decision=Decision.ROLLBACK))
        halted = await until(handle, lambda p: p.halted is not None, "the halt")
        await handle.cancel()
    assert halted.nodes["worker-1"].state is NodeState.ROLLED_BACK
    # Nothing was switched: no reboot of a node that still holds PDB-protected pods.
    assert [step for step, node in fake.log[before:] if node == "worker-1"] == ["uncordon"]


async def test_skip_leaves_the_node_schedulable_and_unlabelled_and_finalize_waits_for_it(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.verify_fails.add("worker-1")
    migration = spec(f"skip-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.nodes and p.nodes["worker-1"].state is NodeState.BLOCKED,
                    "the failed verification")
        assert "worker-1" in fake.labelled and "worker-1" in fake.cordoned
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-1", decision=Decision.SKIP))
        await until(handle, lambda p: p.nodes["worker-1"].state is NodeState.SKIPPED
                    and p.halted is not None, "the skip to halt the run")
        assert "worker-1" not in fake.labelled and "worker-1" not in fake.cordoned
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        refused = await until(handle, lambda p: bool(p.not_migrated), "finalize to refuse")
        assert refused.not_migrated == {"worker-1": "skipped"}
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert len(fake.helm_values) == 1  # the install only: the final values never came


async def test_finalize_waits_for_excluded_nodes_until_the_operator_migrates_them(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=3)
    migration = spec(f"excluded-{task_queue}", approvals={"policy": "none"},
                     rollout={"excludeNodes": ["worker-3"]})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        refused = await until(handle, lambda p: bool(p.not_migrated), "finalize to refuse")
        assert refused.not_migrated == {"worker-3": "excluded"}
        assert len(fake.helm_values) == 1  # only the install: the final values wait
        fake.nodes.append("worker-9")  # a node joins while finalize waits
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-3", decision=Decision.RETRY))
        joined = await until(handle, lambda p: "worker-9" in p.not_migrated, "the new node")
        assert joined.not_migrated == {"worker-9": "not in the plan: joined later?"}
        assert joined.nodes["worker-3"].state is NodeState.MIGRATED
        fake.nodes.remove("worker-9")  # removed from the cluster instead
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        report = await handle.result()
    assert report.phase is Phase.COMPLETED
    assert report.nodes["worker-3"].wave == 0
    assert fake.calls[("reboot", "worker-3")] == 1


async def test_kind_nodes_rebooted_by_docker_keep_their_boot_id_and_still_reboot_once(
        temporal_env: Any, task_queue: str) -> None:
    """A kind node's bootID is its host's: each reboot must be told by the witness the snapshot
    read for the docker strategy (the container's start time), on the way to Cilium and back."""
    fake = FakeCluster(workers=3)
    fake.verify_fails.add("worker-2")
    migration = spec(f"kind-{task_queue}", approvals={"policy": "none"},
                     rollout={"maxUnavailable": 2}, reboot={"strategy": "docker"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await until(handle, lambda p: p.nodes and p.nodes["worker-2"].state is NodeState.BLOCKED,
                    "verify failure")
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-2", decision=Decision.ROLLBACK))
        await until(handle, lambda p: p.halted is not None, "the halt")
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        await until(handle, lambda p: bool(p.not_migrated), "finalize to wait for worker-2")
        fake.verify_fails.clear()
        await handle.execute_update(ClusterMigrationWorkflow.decide,
                                    DecideRequest(node="worker-2", decision=Decision.RETRY))
        report = await handle.result()
    # worker-2: to Cilium, back to flannel, and to Cilium again: three reboots, each once.
    assert fake.boot == {"cp-1": 1, "worker-1": 1, "worker-2": 3, "worker-3": 1}
    assert report.nodes["worker-2"].state is NodeState.MIGRATED
    assert all(n.boot_id_before == n.boot_id_after == f"{name}-boot-0"
               for name, n in report.nodes.items())


async def test_abort_mid_wave_uncordons_what_this_run_cordoned(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=3)
    fake.hold_drain = asyncio.Event()
    migration = spec(f"abort-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await asyncio.wait_for(fake.hold_drain.wait(), timeout=60)
        assert fake.cordoned  # the canary is cordoned and draining
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)
    assert not fake.cordoned and not fake.labelled
    assert final.phase is Phase.CANCELLED
    assert any(n.state is NodeState.CANCELLED for n in final.nodes.values())
    assert fake.echo_mesh is None and final.echo_mesh_removed  # the abort removed the mesh too


async def test_abort_while_the_migration_runs_a_step_of_its_own_ends_cancelled(
        temporal_env: Any, task_queue: str) -> None:
    """Cancelled during the parent's own activity (a health check waiting to converge), the run
    still reports itself cancelled, not stuck in its last phase."""
    fake = FakeCluster(workers=2)
    fake.hold_health = asyncio.Event()
    migration = spec(f"abort-health-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await asyncio.wait_for(fake.hold_health.wait(), timeout=60)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)
    assert final.phase is Phase.CANCELLED
    assert final.error == "aborted by the operator"


async def test_failed_requests_between_echo_pods_halt_new_waves_and_name_the_pairs(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=2)
    fake.breaking_waves.add(1)
    migration = spec(f"monitor-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        halted = await until(handle, lambda p: p.halted is not None, "the halt")
        assert halted.halted.startswith(
            "connectivity in wave 1: 2 requests failed within 60s (at most 0 allowed): "
            "echo-0 (worker-1, 10.244.1.5) -> echo-cp (cp-1, 10.245.0.7) [flannel-cilium]: "
            "i/o timeout; echo-1 ")
        done = await until(handle, lambda p: p.waves[0].state == "halted", "wave 1 to end")
        # The canary finished; the next wave waits for the operator.
        assert all(w.state == "pending" for w in done.waves[1:])
        assert all(done.nodes[n].state is NodeState.PENDING for w in done.waves[1:]
                   for n in w.nodes)
        figures = done.waves[0].connectivity
        assert figures is not None and figures.breached and figures.failed >= 2
        assert figures.by_kind["flannel-cilium"].failed == figures.failed
        # After the halt the wave's monitor only counted: one that stops, one that does not.
        monitors = [call for call in fake.log if call[0] == "monitor-wave-1"]
        assert len(monitors) == 2
        fake.breaking_waves.clear()
        await handle.execute_update(ClusterMigrationWorkflow.resume, {})
        report = await handle.result()
    assert report.phase is Phase.COMPLETED
    assert all(w.connectivity and w.connectivity.failed == 0 for w in report.waves[1:])


async def test_without_the_echo_mesh_nothing_is_deployed_or_watched(
        temporal_env: Any, task_queue: str) -> None:
    fake = FakeCluster(workers=1)
    migration = spec(f"no-mesh-{task_queue}", approvals={"policy": "none"},
                     connectivity={"enabled": False})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        report = await handle.result()
    assert report.phase is Phase.COMPLETED
    assert not any(step.endswith("echo-mesh") or step.startswith("monitor")
                   for step, _ in fake.log)
    assert report.echo_mesh is None and all(w.connectivity is None for w in report.waves)


async def test_an_abort_while_a_waves_monitor_is_stopping_still_aborts(
        temporal_env: Any, task_queue: str) -> None:
    """The wave's nodes are done and its monitor is finishing when the abort comes: the run
    gets the monitor's figures and ends aborted, the mesh removed; it does not go on."""
    fake = FakeCluster(workers=2)
    fake.hold_monitor_stop = asyncio.Event()
    migration = spec(f"abort-monitor-{task_queue}", approvals={"policy": "none"})
    async with build_worker(temporal_env.client, fake.activities(), task_queue=task_queue):
        handle = await start(temporal_env, fake, migration, task_queue)
        await asyncio.wait_for(fake.monitor_stopping.wait(), timeout=60)
        await handle.cancel()
        fake.hold_monitor_stop.set()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        final = await progress(handle)
    assert final.phase is Phase.CANCELLED
    assert final.waves[0].connectivity is not None  # the figures arrived before the end
    assert fake.echo_mesh is None and final.echo_mesh_removed
    assert fake.calls[("monitor-wave-2", "-")] == 0  # no wave after the abort
