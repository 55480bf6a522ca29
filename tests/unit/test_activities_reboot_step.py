"""The reboot step and the snapshot without a cluster: a reboot is told by the boot witness its
strategy reads (a kind node keeps its bootID, its container's start time changes), never asked
for twice, and done only once a Cilium agent runs in containers that started after it."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubeapi import Kube, Obj
from activities.nodes import snapshot_node
from activities.reboot.step import reboot_node
from activities.reboot.strategies import RebootStrategy, strategies
from plan.contract import NodeRef, NodeSnapshot, RebootInput, SnapshotInput, StepError
from plan.policies import ClusterRef, RebootPolicy
from tests.fake_kube import FakeKube, node, pod

TARGET = NodeRef(cluster=ClusterRef(name="c"), node="node-1", migration_id="m")
DOCKER = RebootPolicy(strategy="docker", timeout_seconds=5, image="busybox")
PODS = "/api/v1/namespaces/kube-system/pods"


class ContainerNode:
    """A node that is a container on its host's kernel, as kind's are: `trigger` restarts it,
    which changes its start time and never its bootID. When ``kubelet_returns``, the kubelet
    inside comes back the next time time passes and runs the agent in new containers."""

    witness_name = "container start time"

    def __init__(self, kube: FakeKube, kubelet_returns: bool = True) -> None:
        self.starts = 1
        self.triggers = 0
        self.heartbeats: list[Any] = []  # what the activity had heartbeated so far
        self.heartbeats_at_trigger: list[Any] = []
        if kubelet_returns:
            kube.while_waiting.append(self._kubelet_back)

    def boot_witness(self, kube: Kube, node: Obj) -> str:
        return f"started-{self.starts}"

    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        self.triggers += 1
        self.starts += 1
        self.heartbeats_at_trigger = list(self.heartbeats)

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        return ""

    def _kubelet_back(self, kube: FakeKube) -> None:
        agent = kube.objects[("/api/v1", "pods", "kube-system", "cilium-abcde")]
        agent["status"]["containerStatuses"] = [
            {"name": "cilium-agent", "containerID": f"containerd://agent-{self.starts}"}]


def cluster() -> FakeKube:
    """node-1 with bootID boot-1, Ready, and a Ready agent in its first container."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1", boot_id="boot-1"))
    agent = pod("cilium-abcde", namespace="kube-system", labels={"k8s-app": "cilium"},
                owner="DaemonSet", host_network=True)
    agent["status"]["containerStatuses"] = [
        {"name": "cilium-agent", "containerID": "containerd://agent-1"}]
    kube.add(PODS, agent)
    return kube


def request(witness: str = "started-1", timeout: float = 5) -> RebootInput:
    before = NodeSnapshot(node="node-1", unschedulable=True, boot_id="boot-1",
                          boot_witness=witness, ready=True)
    return RebootInput(target=TARGET, before=before, cilium_namespace="kube-system",
                       policy=DOCKER.model_copy(update={"timeout_seconds": timeout}))


def run(kube: FakeKube, strategy: ContainerNode, reboot: RebootInput,
        env: ActivityEnvironment | None = None) -> Any:
    env = env or ActivityEnvironment()
    env.on_heartbeat = lambda *details: strategy.heartbeats.append(details[0])
    known: dict[str, RebootStrategy] = {"docker": strategy}
    return env.run(reboot_node, kube, reboot, known)


def test_a_container_nodes_reboot_is_seen_in_its_witness_while_its_boot_id_stays() -> None:
    kube = cluster()
    strategy = ContainerNode(kube)
    result = run(kube, strategy, request())
    assert (result.triggered, result.boot_witness_after, result.boot_id_after) == (
        True, "started-2", "boot-1")
    assert strategy.triggers == 1
    # The request is the one event: what came back is the verification's to say.
    assert kube.events() == [("CiliumMigrateRebootRequested", "reboot requested (docker); "
                              "container start time before: started-1")]
    # The node and its agent pods are listed once each, however long the wait.
    assert sorted(path for path, _ in kube.asked("GET")) == [
        "/api/v1/namespaces/kube-system/pods", "/api/v1/nodes"]


def test_the_old_agent_is_heartbeated_before_the_reboot_is_asked_for() -> None:
    """A worker that dies right after asking leaves a retry knowing which agent is stale."""
    kube = cluster()
    strategy = ContainerNode(kube)
    run(kube, strategy, request())
    assert strategy.heartbeats_at_trigger == [{
        "boot_witness_before": "started-1", "triggered": False,
        "agent_containers": ["containerd://agent-1"]}]


def test_the_stale_status_of_a_restarted_node_is_not_taken_for_its_return() -> None:
    """Right after a container restart the Node is still Ready and its agent still Ready in its
    old container: the kubelet inside is not back yet, so the reboot is not done."""
    kube = cluster()
    strategy = ContainerNode(kube, kubelet_returns=False)
    with pytest.raises(ApplicationError) as failed:
        run(kube, strategy, request(timeout=0.2))
    assert failed.value.type == StepError.REBOOT_NOT_COMPLETING
    assert failed.value.message.endswith("its Cilium agent is not Ready")
    assert kube.events()[-1] == ("CiliumMigrateRebootNotCompleting", failed.value.message)

    # The same after a crash: the retry reads the old agent from the last heartbeat.
    retried = ActivityEnvironment()
    retried.info = dataclasses.replace(retried.info, attempt=2,
                                       heartbeat_details=[strategy.heartbeats[-1]])
    with pytest.raises(ApplicationError) as again:
        run(kube, strategy, request(timeout=0.2), retried)
    assert again.value.message.endswith("its Cilium agent is not Ready")
    assert strategy.triggers == 1


def test_a_retry_after_the_reboot_happened_asks_for_nothing() -> None:
    kube = cluster()
    strategy = ContainerNode(kube)
    strategy.starts = 2  # restarted by the first attempt, which died before it heartbeated
    result = run(kube, strategy, request(witness="started-1"))
    assert (result.triggered, strategy.triggers) == (False, 0)


def test_a_witness_that_never_changes_is_named_in_the_failure() -> None:
    kube = cluster()
    strategy = ContainerNode(kube)
    strategy.trigger = lambda kube, node, request: None  # type: ignore[method-assign]
    with pytest.raises(ApplicationError) as failed:
        run(kube, strategy, request(timeout=0.2))
    assert failed.value.message == ("node node-1 did not come back within 0s: its container "
                                    "start time has not changed")


def fake_docker(directory: Path, script: str) -> Path:
    path = directory / "docker"
    path.write_text(f"#!/bin/sh\necho \"$@\" >> {directory / 'calls'}\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_snapshot_reads_a_docker_nodes_witness_from_its_container(tmp_path: Path) -> None:
    kube = cluster()
    docker = fake_docker(tmp_path, 'echo "2026-01-02T03:04:05.5Z"')
    snapshot = snapshot_node(kube, SnapshotInput(target=TARGET, reboot=DOCKER),
                             strategies(docker=str(docker)))
    assert (snapshot.boot_id, snapshot.boot_witness) == ("boot-1", "2026-01-02T03:04:05.5Z")
    assert (tmp_path / "calls").read_text() == "inspect -f {{.State.StartedAt}} node-1\n"
    machine = snapshot_node(kube, SnapshotInput(target=TARGET, reboot=DOCKER.model_copy(
        update={"strategy": "node-shell"})), strategies(docker=str(docker)))
    assert machine.boot_witness == "boot-1"


@pytest.mark.parametrize("script, words", [
    ('echo "Error response from daemon: No such container: node-1" >&2; exit 1',
     "exited 1: Error response from daemon: No such container: node-1"),
    (None, "No such file or directory"),
])
def test_a_docker_witness_that_cannot_be_read_stops_the_snapshot(
        tmp_path: Path, script: str | None, words: str) -> None:
    docker = fake_docker(tmp_path, script) if script else tmp_path / "missing" / "docker"
    with pytest.raises(ApplicationError) as failed:
        snapshot_node(cluster(), SnapshotInput(target=TARGET, reboot=DOCKER),
                      strategies(docker=str(docker)))
    assert failed.value.type == StepError.BOOT_WITNESS_UNREADABLE
    assert "cannot read the start time of node node-1's container" in failed.value.message
    assert words in failed.value.message


def test_a_snapshot_recorded_before_boot_witnesses_existed_watches_its_boot_id() -> None:
    """An older run's history still decodes, and its reboot compares bootIDs as it did."""
    recorded = {"node": "node-1", "unschedulable": False, "boot_id": "boot-1", "ready": True}
    assert NodeSnapshot.model_validate(recorded).boot_witness == "boot-1"
