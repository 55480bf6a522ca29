"""Reboots that do not come back, and retried reboot steps that must not reboot twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import NodeRef, RebootInput, SnapshotInput, StepError
from plan.policies import ClusterRef, RebootPolicy
from plan.spec import DEFAULT_IMAGE
from sandbox.cluster import docker_shim
from sandbox.simulator.containers import ContainerRecord, read_container
from sandbox.simulator.faults import Fault, read_faults, write_faults
from tests.conftest import Sandbox

pytestmark = pytest.mark.sandbox

CLUSTER = ClusterRef(name="sandbox")
IMAGE = DEFAULT_IMAGE


@pytest.fixture(scope="module")
def steps(sandbox: Sandbox, cilium: None) -> MigrationActivities:
    return MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig)))


@pytest.fixture
def faults(sandbox: Sandbox) -> Iterator[Any]:
    """Sets and clears faults; whatever a test left set is cleared afterwards."""
    path = sandbox.state_dir / "faults.yaml"
    touched: list[tuple[str, Fault]] = []

    def change(node: str, fault: Fault, on: bool = True) -> None:
        current = read_faults(path)
        if on:
            current.setdefault(node, set()).add(fault)
            touched.append((node, fault))
        else:
            current.get(node, set()).discard(fault)
        write_faults(path, current)

    yield change
    for node, fault in touched:
        change(node, fault, on=False)


def reboot_pods(sandbox: Sandbox, node: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = sandbox.kube.get(
        "/api/v1/namespaces/kube-system/pods", labelSelector="cilium-migrate.io/node-shell=reboot",
        fieldSelector=f"spec.nodeName={node}")["items"]
    return pods


def test_a_reboot_that_never_completes_fails_and_the_retry_waits_for_the_same_reboot(
        sandbox: Sandbox, steps: MigrationActivities, faults: Any) -> None:
    node = sandbox.claim_worker()
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    env = ActivityEnvironment()
    policy = RebootPolicy(strategy="node-shell", timeout_seconds=2, image=IMAGE)
    snapshot = env.run(steps.snapshot_node, SnapshotInput(target=target, reboot=policy))
    before = snapshot.boot_id
    request = RebootInput(target=target, before=snapshot, cilium_namespace="kube-system",
                          policy=policy)
    faults(node, Fault.REBOOT_NEVER_COMPLETES)

    with pytest.raises(ApplicationError) as raised:
        env.run(steps.reboot_node, request)
    error = raised.value
    assert error.type == StepError.REBOOT_NOT_COMPLETING and error.non_retryable
    assert "bootID has not changed" in error.message
    assert len(reboot_pods(sandbox, node)) == 1  # kept, so a retry does not ask again

    # The operator power-cycles the machine and retries the step, a new activity that knows
    # nothing of the last one: it finds the kept pod instead of creating another, waits for
    # the boot, and cleans up.
    faults(node, Fault.REBOOT_NEVER_COMPLETES, on=False)
    result = ActivityEnvironment().run(steps.reboot_node, request.model_copy(
        update={"policy": request.policy.model_copy(update={"timeout_seconds": 30})}))
    assert result.boot_id_after != before
    assert reboot_pods(sandbox, node) == []  # a second reboot pod would still be here
    assert ActivityEnvironment().run(steps.snapshot_node, SnapshotInput(
        target=target, reboot=policy)).ready


def test_a_command_reboot_recorded_as_triggered_is_not_run_again(
        sandbox: Sandbox, steps: MigrationActivities) -> None:
    """A worker died after the command ran: Temporal gives the next attempt the last
    heartbeat, which says the reboot was asked for, so the attempt only waits. (Read-only use
    of a node: the command fails or is not run, so nothing reboots.)"""
    node = sandbox.workers()[-1]
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    policy = RebootPolicy(strategy="command", timeout_seconds=1, image=IMAGE,
                          command=["false", "{node}"])
    snapshot = ActivityEnvironment().run(steps.snapshot_node, SnapshotInput(target=target,
                                                                            reboot=policy))
    request = RebootInput(target=target, before=snapshot, cilium_namespace="kube-system",
                          policy=policy)

    with pytest.raises(ApplicationError) as fresh:
        ActivityEnvironment().run(steps.reboot_node, request)
    assert "exited 1" in fresh.value.message  # a first attempt runs the command

    retried = ActivityEnvironment()
    retried.info = dataclasses.replace(retried.info, attempt=2, heartbeat_details=[
        {"boot_witness_before": snapshot.boot_witness, "triggered": True,
         "agent_containers": []}])
    with pytest.raises(ApplicationError) as waited:
        retried.run(steps.reboot_node, request)
    assert waited.value.type == StepError.REBOOT_NOT_COMPLETING
    assert "bootID has not changed" in waited.value.message


def container(sandbox: Sandbox, node: str) -> ContainerRecord:
    record = read_container(sandbox.state_dir, node)
    assert record is not None
    return record


def test_a_docker_reboot_of_a_container_node_is_seen_and_happens_once(
        shared_kernel_sandbox: Sandbox) -> None:
    """kind's recipe: a node is a container on the host's kernel, so `docker restart` keeps
    its bootID; the step must still see the reboot, and a retry must not restart it again."""
    sandbox = shared_kernel_sandbox
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig),
                                                docker=str(docker_shim(sandbox.state_dir))))
    node = sandbox.claim_worker()
    target = NodeRef(cluster=CLUSTER, node=node, migration_id="r")
    policy = RebootPolicy(strategy="docker", timeout_seconds=30, image=IMAGE)
    before = ActivityEnvironment().run(steps.snapshot_node, SnapshotInput(target=target,
                                                                          reboot=policy))
    assert before.boot_witness == container(sandbox, node).startedAt
    request = RebootInput(target=target, before=before, cilium_namespace="kube-system",
                          policy=policy)

    first = ActivityEnvironment().run(steps.reboot_node, request)
    assert first.triggered and container(sandbox, node).restarts == 1
    assert first.boot_id_after == before.boot_id  # the host's kernel did not restart
    assert first.boot_witness_after == container(sandbox, node).startedAt

    # The step once more, as after a worker crash: a new activity that knows nothing of the
    # first finds the reboot done and restarts nothing.
    second = ActivityEnvironment().run(steps.reboot_node, request)
    assert not second.triggered and container(sandbox, node).restarts == 1
