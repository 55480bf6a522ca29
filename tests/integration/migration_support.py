"""Running whole migrations in tests: a fresh sandbox, a worker, a spec, gate approvals."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.context import ActivityContext
from activities.kubeapi import Kube
from activities.registry import activities
from client.migrations import with_running_steps
from plan.spec import MigrationSpec
from sandbox import cluster
from sandbox.simulator.faults import Fault
from sandbox.toolchain import Toolchain
from tests.conftest import CHART
from tests.helpers import set_fault, wait_for
from worker.build import build_worker
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id, node_workflow_id
from workflows.messages import ApproveRequest, MigrationInput
from workflows.progress import Phase, Progress

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
RECORD_ENV = "CILIUM_MIGRATE_RECORD_HISTORIES"


def migration_spec(name: str, **sections: Any) -> MigrationSpec:
    """The article's migration on a sandbox: Cilium's own chart, short deadlines."""
    base: dict[str, Any] = {
        "cluster": {"name": name},
        "cilium": {"chart": {"path": str(CHART)}},
        "drain": {"timeout": "90s"},
        "reboot": {"timeout": "90s"},
        "verify": {"timeout": "60s"},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return MigrationSpec.model_validate(base)


@contextmanager
def fresh_sandbox(state_dir: Path, workers: int, zones: int,
                  shared_kernel: bool = False, network: str = "simulated") -> Iterator[Kube]:
    cluster.up(state_dir, nodes=workers + 1, control_planes=1, zones=zones,
               simulator_args=("--reboot-seconds", "1"), shared_kernel=shared_kernel,
               network=network)
    try:
        yield Kube(str(state_dir / "kubeconfig"))
    finally:
        cluster.down(state_dir)


def activity_context(state_dir: Path, toolchain: Toolchain, name: str) -> ActivityContext:
    return ActivityContext(kubeconfigs={name: str(state_dir / "kubeconfig")},
                           helm=str(toolchain["helm"]))


def in_process_worker(client: Client, context: ActivityContext, task_queue: str) -> Any:
    return build_worker(client, activities(context), task_queue=task_queue)


class WorkerProcess:
    """A worker in its own process, so a test can kill it as a crash would."""

    def __init__(self, address: str, task_queue: str, state_dir: Path, toolchain: Toolchain,
                 name: str, log: Path, docker: str = "docker",
                 kubeconfig: Path | None = None) -> None:
        self.command = [sys.executable, str(Path(__file__).with_name("worker_process.py")),
                        address, task_queue, name, str(kubeconfig or state_dir / "kubeconfig"),
                        str(toolchain["helm"]), docker]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and SIGKILL if it has not ended within 30 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def slow_pod_node(kube: Kube, state_dir: Path) -> str:
    """Starts a pod that ignores SIGTERM (25 s grace period), so a drain of its node stays
    busy for a while; returns that node."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": "slow"}})
    kube.create("/apis/apps/v1/namespaces/slow/deployments", {
        "metadata": {"name": "slow"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "slow"}},
                 "template": {"metadata": {"labels": {"app": "slow"}}, "spec": {
                     "terminationGracePeriodSeconds": 25,
                     "containers": [{"name": "slow", "image": "busybox"}]}}}})
    node: str = wait_for(lambda: next((
        p["spec"]["nodeName"] for p in kube.get(
            "/api/v1/namespaces/slow/pods", labelSelector="app=slow")["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ), None), "the slow pod")
    set_fault(state_dir, node, Fault.IGNORE_TERMINATION, True)
    return node


async def start_migration(client: Client, spec: MigrationSpec, task_queue: str
                          ) -> WorkflowHandle[Any, Progress]:
    return await client.start_workflow(
        ClusterMigrationWorkflow.run, MigrationInput(spec=spec),
        id=cluster_workflow_id(spec.cluster.name), task_queue=task_queue)


async def progress_of(handle: WorkflowHandle[Any, Progress]) -> Progress:
    """What `status` shows: the parent's account, with each running node's current step read
    from that node's own workflow (the parent hears only of a node's end or block)."""
    current = await handle.query(ClusterMigrationWorkflow.get_progress)
    if current.phase.ended:
        return current
    # The SDK gives a handle no public accessor for its client; the node workflows need it.
    client: Client = handle._client  # noqa: SLF001
    await with_running_steps(client, handle.id, current.nodes.values())
    return current


async def wait_progress(handle: WorkflowHandle[Any, Progress], check: Any, what: str,
                        timeout: float = 300.0, approver: str | None = None) -> Progress:
    """Queries until ``check(progress)``; approves gates on the way when ``approver`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    current = await progress_of(handle)
    while loop.time() < deadline:
        current = await progress_of(handle)
        if check(current):
            return current
        if current.phase in (Phase.FAILED, Phase.CANCELLED, Phase.COMPLETED):
            raise AssertionError(f"run ended ({current.phase}) before: {what}; "
                                 f"{current.error}")
        if approver:
            for gate in current.pending_gates:
                await handle.execute_update(ClusterMigrationWorkflow.approve, ApproveRequest(
                    gate=gate, approver=approver, reason=f"reviewed {gate}"),
                    id=f"approve-{gate}")
        await asyncio.sleep(0.2)
    states = {name: (n.state.value, n.step.value if n.step else None, n.blocker)
              for name, n in current.nodes.items()}
    raise AssertionError(f"timed out waiting for: {what}; phase {current.phase.value}, "
                         f"halted {current.halted!r}, nodes {states}\n"
                         + await what_it_waits_on(handle))


async def what_it_waits_on(handle: WorkflowHandle[Any, Any]) -> str:
    """For a test that timed out: the run's pending steps and children, and where each
    workflow's code waits (the SDK's built-in stack trace query), so a rare hang in CI says
    where it hung."""
    client: Client = handle._client  # noqa: SLF001
    lines: list[str] = []
    ids = [handle.id]
    while ids:
        workflow_id = ids.pop(0)
        running = client.get_workflow_handle(workflow_id)
        try:
            described = (await running.describe()).raw_description
            lines.append(f"== {workflow_id}")
            for step in described.pending_activities:
                lines.append(f"  step {step.activity_type.name}: state {step.state}, attempt "
                             f"{step.attempt}, last failure {step.last_failure.message!r}")
            for child in described.pending_children:
                lines.append(f"  child {child.workflow_id}")
                ids.append(child.workflow_id)
            lines.append(await running.query("__stack_trace"))
        except Exception as error:  # a diagnosis must not hide the timeout it explains
            lines.append(f"  ({workflow_id}: {error})")
    return "\n".join(lines)


def pod_ips_outside(kube: Kube, pools: list[str]) -> list[str]:
    """Running non-hostNetwork pods whose IP is not in the given pools."""
    networks = [ipaddress.ip_network(p) for p in pools]
    outside = []
    for pod in kube.get("/api/v1/pods")["items"]:
        status, spec = pod.get("status", {}), pod.get("spec", {})
        if spec.get("hostNetwork") or status.get("phase") != "Running" or not status.get(
                "podIP") or pod["metadata"].get("deletionTimestamp"):
            continue
        if not any(ipaddress.ip_address(status["podIP"]) in n for n in networks):
            outside.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']} "
                           f"{status['podIP']}")
    return outside


async def record_history(handle: WorkflowHandle[Any, Any], children: int = 1,
                         nodes: tuple[str, ...] = ()) -> None:
    """Saves a real run's history, and its children's (those of ``nodes``, else the first
    ``children`` listed), for the replay tests when recording is switched on."""
    if not os.environ.get(RECORD_ENV):
        return
    HISTORIES.mkdir(exist_ok=True)
    client = handle._client
    ids = [handle.id, *(node_workflow_id(handle.id, node) for node in nodes)]
    if not nodes:
        async for execution in client.list_workflows(f"ParentWorkflowId='{handle.id}'"):
            if len(ids) > children:
                break
            ids.append(execution.id)
    for recorded in ids:
        history = await client.get_workflow_handle(recorded).fetch_history()
        name = re.sub(r"[^A-Za-z0-9_.-]", "__", recorded)
        (HISTORIES / f"{name}.json").write_text(json.dumps(
            {"workflow_id": recorded, "history": json.loads(history.to_json())}))
