"""Host commands without a cluster: the node-shell pod they run in, the Event a successful one
records when asked to, and failures that carry the command's own words."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.host import SHELL_LABEL, run_host_command
from plan.contract import HostCommandInput, NodeNote, NodeRef, StepError
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, node

TARGET = NodeRef(cluster=ClusterRef(name="c"), node="Node.1", migration_id="m")
NOTE = NodeNote(reason="CiliumMigrateRolledBack", message="flannel's config is back")


def cluster(exit_code: int, message: str = "") -> FakeKube:
    """A node whose kubelet runs node-shell pods to the given end."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("Node.1"))

    def run_shells(kube: FakeKube) -> None:
        for key, obj in kube.objects.items():
            if key[1] == "pods" and SHELL_LABEL in (obj["metadata"].get("labels") or {}):
                obj["status"] = {"phase": "Succeeded" if exit_code == 0 else "Failed",
                                 "containerStatuses": [{"state": {"terminated": {
                                     "exitCode": exit_code, "message": message}}}]}

    kube.while_waiting.append(run_shells)
    return kube


def command(on_success: NodeNote | None = None) -> HostCommandInput:
    return HostCommandInput(target=TARGET, name="rollback", script="mv a b", image="busybox",
                            on_success=on_success)


def test_the_script_runs_in_the_hosts_namespaces_on_the_node_and_its_pod_is_removed() -> None:
    kube = cluster(exit_code=0)
    ActivityEnvironment().run(run_host_command, kube, command())
    [(path, pod)] = kube.asked("POST", "/pods")
    assert path == "/api/v1/namespaces/kube-system/pods"
    assert pod["metadata"]["name"] == "cilium-migrate-rollback-node.1"
    assert pod["spec"]["nodeName"] == "Node.1" and pod["spec"]["hostPID"]
    assert pod["spec"]["containers"][0]["command"][-3:] == ["sh", "-c", "mv a b"]
    kube.pass_time()
    assert kube.pods() == []


def test_a_successful_command_records_its_note_on_the_node() -> None:
    kube = cluster(exit_code=0)
    ActivityEnvironment().run(run_host_command, kube, command(on_success=NOTE))
    assert kube.events() == [(NOTE.reason, NOTE.message)]


def test_without_a_note_nothing_is_recorded_whatever_the_commands_name() -> None:
    kube = cluster(exit_code=0)
    ActivityEnvironment().run(run_host_command, kube, command())
    assert kube.events() == []


def test_a_failing_command_fails_typed_with_its_output_and_records_nothing() -> None:
    kube = cluster(exit_code=1, message="mv: can't rename 'a': No such file\n")
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(run_host_command, kube, command(on_success=NOTE))
    error = raised.value
    assert error.type == StepError.HOST_COMMAND_FAILED and error.non_retryable
    assert error.message == ("rollback on Node.1 failed (exit 1): "
                             "mv: can't rename 'a': No such file")
    assert kube.events() == []
    kube.pass_time()
    assert kube.pods() == []
