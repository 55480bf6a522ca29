"""Fleets on real clusters: sandboxes migrated stage after stage by `FleetMigrationWorkflow`,
driven with the operator's commands (`cilium-migrate fleet ...` and the per-cluster ones).

As in production, the workflows run on a central worker that holds no cluster's credentials
(it only renders the chart), and each cluster's steps on a worker process of its own, on the
cluster's task queue, holding only that cluster's kubeconfig. The module has a Temporal dev
server of its own that forgets a stopped worker's polls after two seconds instead of five
minutes, so `fleet status` can show a cluster waiting for its worker without a long wait.

A migrated cluster is Cilium for good, so each scenario gets fresh sandboxes (two nodes, no
control plane: the smallest cluster preflight accepts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from activities.context import ActivityContext
from activities.kubeapi import Kube
from plan.contract import CORDONED_BY_ANNOTATION, MIGRATION_LABEL
from sandbox import cluster
from sandbox.simulator.faults import Fault
from sandbox.toolchain import Toolchain
from tests.cli.conftest import Result, cli_env, run_cli
from tests.conftest import CHART, local_temporal
from tests.helpers import set_fault, wait_for
from tests.integration.migration_support import (
    WorkerProcess,
    in_process_worker,
    slow_pod_node,
)
from workflows.cluster import ClusterMigrationWorkflow
from workflows.fleet import FleetMigrationWorkflow
from workflows.fleet_progress import ClusterState, FleetPhase, FleetProgress, StageState
from workflows.identity import cluster_workflow_id, fleet_workflow_id
from workflows.progress import NodeState, Phase, Progress

pytestmark = pytest.mark.sandbox

APPROVER = "alice"
SOAK = timedelta(seconds=3)
# What the sandbox's worker nodes are called (Topology.generate); the canary is the first.
NODES = ("worker-1", "worker-2")
WAIT = 420.0  # seconds: a generous bound for one cluster's migration on a busy machine


@dataclass
class FleetCluster:
    """One sandbox of a fleet and the worker process serving its task queue."""

    name: str
    state_dir: Path
    kube: Kube
    worker: WorkerProcess

    @property
    def task_queue(self) -> str:
        return f"cilium-migrate.{self.name}"


@pytest.fixture(scope="module")
async def fleet_server() -> Any:
    env = await local_temporal("--dynamic-config-value", 'matching.PollerHistoryTTL="2s"')
    try:
        yield env
    finally:
        await env.shutdown()


@contextmanager
def fleet_clusters(names: list[str], root: Path, address: str,
                   toolchain: Toolchain) -> Iterator[dict[str, FleetCluster]]:
    """Fresh sandboxes, each with its worker process; all stopped at the end, whatever
    happened."""
    with ExitStack() as stack:
        def start(name: str) -> FleetCluster:
            state_dir = root / name
            stack.callback(lambda: (state_dir / "state.json").exists()
                           and cluster.down(state_dir))
            cluster.up(state_dir, nodes=len(NODES), control_planes=0, zones=1,
                       simulator_args=("--reboot-seconds", "1"))
            worker = WorkerProcess(address, f"cilium-migrate.{name}", state_dir, toolchain,
                                   name, root / f"{name}-worker.log")
            stack.callback(worker.stop)
            worker.start()
            return FleetCluster(name, state_dir, Kube(str(state_dir / "kubeconfig")), worker)

        # One after the other: sandboxes started side by side in one process can pick the
        # same free port for two of their servers (see the report of this branch).
        yield {name: start(name) for name in names}


def fleet_file(path: Path, name: str, clusters: dict[str, dict[str, Any]],
               stages: list[dict[str, Any]]) -> Path:
    """A fleet file as an operator writes one: shared defaults (the article's migration on
    a sandbox, short deadlines, no approvals of the clusters' own), each cluster on its task
    queue."""
    path.write_text(yaml.safe_dump({
        "name": name,
        "approvals": {"approvers": [APPROVER]},
        "defaults": {
            "cilium": {"chart": {"path": str(CHART)}},
            "approvals": {"policy": "none"},
            "rollout": {"firstNodes": [NODES[0]]},
            "drain": {"timeout": "90s"},
            "reboot": {"timeout": "90s"},
            "verify": {"timeout": "30s"},
            # The simulated network carries no packets: the echo mesh would only cost time.
            "connectivity": {"enabled": False},
        },
        "clusters": [{"name": cluster_name, "taskQueue": f"cilium-migrate.{cluster_name}",
                      **extra} for cluster_name, extra in clusters.items()],
        "stages": stages,
    }, sort_keys=False))
    return path


class Operator:
    """The commands an operator types, against the module's server."""

    def __init__(self, client: Client, fleet: str) -> None:
        self.client = client
        self.fleet = fleet
        self.env = cli_env(str(client.service_client.config.target_host))

    async def cli(self, *args: str, ok: bool = True) -> Result:
        result = await run_cli(*args, env=self.env, timeout=120)
        if ok:
            assert result.code == 0, f"cilium-migrate {' '.join(args)}: {result}"
        return result

    async def fleet_progress(self) -> FleetProgress:
        handle = self.client.get_workflow_handle_for(FleetMigrationWorkflow.run,
                                                     fleet_workflow_id(self.fleet))
        return await handle.query(FleetMigrationWorkflow.get_progress)

    async def cluster_progress(self, cluster_name: str) -> Progress:
        handle = self.client.get_workflow_handle_for(ClusterMigrationWorkflow.run,
                                                     cluster_workflow_id(cluster_name))
        return await handle.query(ClusterMigrationWorkflow.get_progress)

    async def until_fleet(self, check: Any, what: str, timeout: float = WAIT) -> FleetProgress:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            current = await self.fleet_progress()
            if check(current):
                return current
            if current.phase.ended or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the fleet never reached: {what}; last: "
                                     f"{current.model_dump_json(indent=1)}")
            await asyncio.sleep(0.5)

    async def until_cluster(self, cluster_name: str, check: Any, what: str,
                            timeout: float = WAIT) -> Progress:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                current = await self.cluster_progress(cluster_name)
            except Exception:  # not started yet: the fleet starts it when its stage comes
                current = None
            if current is not None and check(current):
                return current
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"cluster {cluster_name} never reached: {what}; last: "
                                     f"{current.model_dump_json(indent=1) if current else None}")
            await asyncio.sleep(0.5)


def cordoned(kube: Kube) -> list[str]:
    return [n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]
            if n["spec"].get("unschedulable")
            or CORDONED_BY_ANNOTATION in (n["metadata"].get("annotations") or {})]


def cordons_only(kube: Kube, node: str) -> bool:
    return cordoned(kube) == [node]


def migrated(kube: Kube) -> list[str]:
    return sorted(n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]
                  if n["metadata"]["labels"].get(MIGRATION_LABEL) == "true")


async def step_queues(client: Client, workflow_id: str) -> set[str]:
    """The task queues a workflow scheduled its steps on."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return {event.activity_task_scheduled_event_attributes.task_queue.name
            for event in history.events
            if event.event_type is EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}


async def test_three_stages_in_order_through_a_failure_and_a_worker_outage(
        fleet_server: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """dev -> staging (approved; its canary fails and is rolled back, which halts the fleet
    until staging is mended with its own commands) -> prod (its worker stops mid-run)."""
    client: Client = fleet_server.client
    name = f"rollout-{uuid.uuid4().hex[:6]}"
    central = f"central-{uuid.uuid4().hex[:8]}"
    operator = Operator(client, name)
    spec = fleet_file(tmp_path / "fleet.yaml", name, {
        "dev": {"labels": {"env": "dev"}},
        # The failing probe is tried until verify's deadline: keep it short.
        "staging": {"labels": {"env": "staging"}, "overrides": {"verify": {"timeout": "15s"}}},
        # prod's own gates give the test a moment with no step running to stop its worker.
        "prod": {"labels": {"env": "prod"}, "overrides": {"approvals": {"policy": "per-phase"}}},
    }, [
        {"name": "dev", "clusters": ["dev"], "soak": f"{SOAK.seconds}s"},
        {"name": "staging", "selector": {"env": "staging"}, "approval": True,
         "soak": f"{SOAK.seconds}s"},
        {"name": "prod", "clusters": ["prod"]},
    ])
    address = str(client.service_client.config.target_host)
    central_steps = ActivityContext(helm=str(toolchain["helm"]))  # no cluster credentials
    with fleet_clusters(["dev", "staging", "prod"], tmp_path / "sandboxes", address,
                        toolchain) as clusters:
        async with in_process_worker(client, central_steps, central):
            await operator.cli("fleet", "start", str(spec), "--task-queue", central)

            # Per-cluster commands reach a cluster of the fleet under its usual ID.
            await operator.until_fleet(lambda p: p.clusters["dev"].state is ClusterState.RUNNING,
                                       "dev's start")
            await operator.until_cluster("dev", lambda p: True, "dev's workflow")
            await operator.cli("pause", "dev", "--as", APPROVER, "--reason", "look first")
            paused = await operator.cli("status", "dev", "-o", "json")
            assert '"paused": true' in paused.out, paused
            await operator.cli("resume", "dev", "--as", APPROVER)

            # Stage 2 waits for its approval; nothing of it has started.
            waiting = await operator.until_fleet(lambda p: p.pending_gates == ["stage-2"],
                                                 "stage-2's gate")
            assert waiting.clusters["dev"].state is ClusterState.COMPLETED
            assert waiting.clusters["staging"].state is ClusterState.PENDING
            assert [s.state for s in waiting.stages] == [
                StageState.DONE, StageState.WAITING_APPROVAL, StageState.PENDING]
            set_fault(clusters["staging"].state_dir, NODES[0], Fault.PROBE_FAILS)
            await operator.cli("fleet", "approve", name, "stage-2", "--as", APPROVER,
                               "--reason", "dev soaked")

            # staging's canary fails its probe and waits for a decision; stage 3 waits.
            staging = clusters["staging"]
            blocked = await operator.until_cluster(
                "staging", lambda p: NODES[0] in p.nodes
                and p.nodes[NODES[0]].state is NodeState.BLOCKED, "staging's canary to block")
            assert NODES[1] not in blocked.nodes or \
                blocked.nodes[NODES[1]].state is NodeState.PENDING  # no new wave
            assert await asyncio.to_thread(cordoned, staging.kube) == [NODES[0]]
            # A node waiting for the operator holds the fleet already.
            held = await operator.until_fleet(lambda p: "waits for `decide`" in (p.halted or ""),
                                              "the fleet to hold for the blocked canary")
            assert held.clusters["prod"].state is ClusterState.PENDING

            # The operator rolls the canary back: staging halts, and the fleet stays halted.
            set_fault(staging.state_dir, NODES[0], Fault.PROBE_FAILS, on=False)
            await operator.cli("decide", "staging", NODES[0], "rollback", "--as", APPROVER)
            halted = await operator.until_fleet(lambda p: "rolled-back" in (p.halted or ""),
                                                "the fleet's halt for the rolled-back canary")
            assert halted.halted and "staging" in halted.halted
            assert halted.clusters["staging"].state is ClusterState.RUNNING
            assert halted.clusters["prod"].state is ClusterState.PENDING
            assert halted.stages[2].state is StageState.PENDING
            shown = await operator.cli("fleet", "status", name)
            assert "HALTED" in shown.out and "status staging" in shown.out, shown
            rolled_back = await operator.cluster_progress("staging")
            assert rolled_back.nodes[NODES[0]].state is NodeState.ROLLED_BACK
            assert await asyncio.to_thread(cordoned, staging.kube) == []

            # With staging's own commands: go on with its next wave, then migrate the canary
            # again when finalize waits for it. The fleet goes on once staging does.
            await operator.cli("resume", "staging", "--as", APPROVER)
            await operator.until_cluster("staging", lambda p: NODES[0] in p.not_migrated,
                                         "finalize to wait for the rolled-back canary")
            still = await operator.fleet_progress()
            assert still.halted and "staging" in still.halted
            assert still.clusters["prod"].state is ClusterState.PENDING
            await operator.cli("decide", "staging", NODES[0], "retry", "--as", APPROVER)

            # prod's worker stops while prod waits at its install gate; the install waits.
            await operator.until_cluster("prod", lambda p: "install" in p.pending_gates,
                                         "prod's install gate")
            prod = clusters["prod"]
            await asyncio.to_thread(prod.worker.stop)
            await operator.cli("approve", "prod", "install", "--as", APPROVER)
            await until_shown(operator, "waiting for a worker: no worker polls it (task queue "
                              f"{prod.task_queue})")
            assert (await operator.cluster_progress("prod")).phase is Phase.INSTALLING
            prod.worker.start()
            for gate in ("rollout", "finalize", "remove-flannel"):
                await operator.until_cluster("prod", lambda p, g=gate: g in p.pending_gates,
                                             f"prod's {gate} gate")
                await operator.cli("approve", "prod", gate, "--as", APPROVER)
            handle = client.get_workflow_handle_for(FleetMigrationWorkflow.run,
                                                    fleet_workflow_id(name))
            report = await asyncio.wait_for(handle.result(), WAIT)
            queues = {c: await step_queues(client, cluster_workflow_id(c)) for c in clusters}
        nodes = {c.name: (migrated(c.kube), cordoned(c.kube)) for c in clusters.values()}

    assert report.phase is FleetPhase.COMPLETED
    assert {c: r.state for c, r in report.clusters.items()} == dict.fromkeys(
        clusters, ClusterState.COMPLETED)
    assert [a.gate for a in report.approvals] == ["stage-2"]
    assert report.approvals[0].approver == APPROVER
    # Stages in order, each soaking after its last cluster, the next starting after it.
    dev, staging, prod_record = (report.clusters[c] for c in ("dev", "staging", "prod"))
    first, second, third = report.stages
    assert dev.finished_at and first.finished_at and second.started_at
    assert first.finished_at - dev.finished_at >= SOAK
    assert first.soak_checks >= 1 and not first.soak_problems
    assert staging.started_at and staging.started_at >= first.finished_at
    assert staging.finished_at and second.finished_at
    assert second.finished_at - staging.finished_at >= SOAK
    assert third.started_at and third.started_at >= second.finished_at
    assert prod_record.started_at and prod_record.started_at >= second.finished_at
    assert third.soak_seconds == 0 and third.finished_at
    # Each cluster's steps ran on its own queue, but rendering the chart (no cluster).
    for name_, seen in queues.items():
        assert seen == {f"cilium-migrate.{name_}", central}, (name_, seen)
    assert nodes == dict.fromkeys(clusters, (list(NODES), []))  # all migrated, none cordoned


async def until_shown(operator: Operator, text: str, timeout: float = 120.0) -> Result:
    """`fleet status` until it shows ``text`` (the server notices a worker gone only after
    its last poll is forgotten)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        shown = await operator.cli("fleet", "status", operator.fleet)
        if text in " ".join(shown.out.split()):
            return shown
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"`fleet status` never showed {text!r}: {shown}")
        await asyncio.sleep(1.0)


async def test_abort_cancels_the_running_clusters_and_leaves_nothing_cordoned(
        fleet_server: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    """One stage of three clusters, two at once: the third waits for a slot; an abort while
    both drain cancels them, and each uncordons what it cordoned."""
    client: Client = fleet_server.client
    name = f"aborted-{uuid.uuid4().hex[:6]}"
    central = f"central-{uuid.uuid4().hex[:8]}"
    operator = Operator(client, name)
    running = ["qa-1", "qa-2"]
    # qa-3 has no sandbox: it never gets a slot before the abort, so it needs none.
    spec_clusters: dict[str, dict[str, Any]] = {c: {} for c in (*running, "qa-3")}
    address = str(client.service_client.config.target_host)
    with fleet_clusters(running, tmp_path / "sandboxes", address, toolchain) as clusters:
        # A pod that takes its whole 25 s grace period keeps each canary's drain busy.
        canaries = {c: await asyncio.to_thread(slow_pod_node, clusters[c].kube,
                                               clusters[c].state_dir) for c in running}
        for c in running:
            spec_clusters[c] = {"overrides": {"rollout": {"firstNodes": [canaries[c]]}}}
        spec = fleet_file(tmp_path / "fleet.yaml", name, spec_clusters,
                          [{"name": "qa", "clusters": [*running, "qa-3"], "concurrency": 2}])
        async with in_process_worker(client, ActivityContext(helm=str(toolchain["helm"])),
                                     central):
            await operator.cli("fleet", "start", str(spec), "--task-queue", central)
            both = await operator.until_fleet(
                lambda p: all(p.clusters[c].state is ClusterState.RUNNING for c in running),
                "both clusters to run")
            assert both.clusters["qa-3"].state is ClusterState.PENDING
            for c in running:
                await asyncio.to_thread(wait_for, partial(cordons_only, clusters[c].kube,
                                                          canaries[c]),
                                        f"{c}'s canary cordoned", WAIT)
            await operator.cli("fleet", "abort", name, "--wait")
            handle = client.get_workflow_handle(fleet_workflow_id(name))
            assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
            ended = await operator.fleet_progress()
            children = {c: await client.get_workflow_handle(cluster_workflow_id(c)).describe()
                        for c in running}
        left = {c: await asyncio.to_thread(cordoned, clusters[c].kube) for c in running}
        labelled = {c: await asyncio.to_thread(migrated, clusters[c].kube) for c in running}

    assert ended.phase is FleetPhase.CANCELLED
    assert {c: ended.clusters[c].state for c in ended.clusters} == {
        "qa-1": ClusterState.CANCELLED, "qa-2": ClusterState.CANCELLED,
        "qa-3": ClusterState.PENDING}
    assert ended.stages[0].state is StageState.CANCELLED
    assert {c: d.status for c, d in children.items()} == dict.fromkeys(
        running, WorkflowExecutionStatus.CANCELED)
    assert left == {"qa-1": [], "qa-2": []}
    assert labelled == {"qa-1": [], "qa-2": []}  # the canaries' drains never got further
