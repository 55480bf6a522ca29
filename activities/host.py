"""Acting on a node's host through a node-shell pod: a privileged, host-PID pod pinned to the
node that enters the host's namespaces and runs a command there (what kured does).

The node-shell reboot and the rollback's file moves run through it; the verify probe, an
ordinary pod, shares its naming and its reading of how a pod ended. A pod's name is derived
from what it does, so a retried step finds the pod of its predecessor.
"""

from __future__ import annotations

import re

from activities.context import get_node, heartbeat, record_node_event, step_error
from activities.kubeapi import Kube, Obj, pod_finished
from plan.contract import HostCommandInput, StepError

SHELL_LABEL = "cilium-migrate.io/node-shell"


def node_shell_pod(name: str, node: str, image: str, host_argv: list[str],
                   purpose: str) -> Obj:
    """A pod that runs ``host_argv`` in the host's namespaces on ``node``."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {SHELL_LABEL: purpose,
                                              "app.kubernetes.io/managed-by": "cilium-migrate"}},
        "spec": {
            "nodeName": node, "hostPID": True, "hostNetwork": True, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "shell", "image": image,
                "command": ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net",
                            "--pid", "--", *host_argv],
                "securityContext": {"privileged": True},
                # Failing commands leave their output where the activity can read it.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    }


def pod_name(*parts: str) -> str:
    """A valid pod name from parts (node names may hold dots and capitals)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", "-".join(("cilium-migrate", *parts)).lower())
    return name[:253].strip("-.")


def termination(pod: Obj) -> tuple[int | None, str]:
    """Exit code and termination message of the pod's first container that ended."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode"), terminated.get("message") or ""
    return None, ""


def pod_state(pod: Obj | None) -> str:
    """The pod's phase and, once it ended, its exit code and message, for an operator."""
    if pod is None:
        return "gone"
    code, message = termination(pod)
    state = pod.get("status", {}).get("phase", "Pending")
    if code is not None:
        state += f" (exit {code}{': ' + message.strip() if message.strip() else ''})"
    return state


def run_host_command(kube: Kube, request: HostCommandInput) -> None:
    """Runs ``request.script`` with the host's shell; fails with its output if it fails, and
    records ``request.on_success`` on the node if it succeeds.

    Scripts should be idempotent: a retried step whose pod already finished reads that
    pod's outcome, but one whose pod was already cleaned up runs the script again.
    """
    node = request.target.node
    get_node(kube, node)
    name = pod_name(request.name, node)
    pods = f"/api/v1/namespaces/{request.namespace}/pods"
    pod = node_shell_pod(name, node, request.image, ["sh", "-c", request.script],
                         purpose=request.name)
    existing = kube.get_or_none(f"{pods}/{name}")
    if existing is not None and existing["spec"]["containers"][0].get("command") != (
            pod["spec"]["containers"][0]["command"]):
        _delete_and_wait(kube, request.namespace, name, request.timeout_seconds)
        existing = None
    if existing is None:
        kube.create(pods, pod)
    try:
        finished = kube.wait(pods, lambda found: next((p for p in found if pod_finished(p)), None),
                             request.timeout_seconds, on_tick=lambda: heartbeat(pod=name),
                             fieldSelector=f"metadata.name={name}")
        if finished is None:
            state = pod_state(kube.get_or_none(f"{pods}/{name}"))
            raise step_error(StepError.HOST_COMMAND_FAILED,
                             f"{request.name} on {node} did not finish within "
                             f"{request.timeout_seconds:.0f}s (pod {state})")
        if finished["status"]["phase"] != "Succeeded":
            code, message = termination(finished)
            raise step_error(StepError.HOST_COMMAND_FAILED,
                             f"{request.name} on {node} failed (exit {code}): "
                             f"{message.strip() or 'no output'}")
    finally:
        kube.delete(f"{pods}/{name}")
    if request.on_success is not None:
        record_node_event(kube, node, request.on_success.reason, request.on_success.message)


def _delete_and_wait(kube: Kube, namespace: str, name: str, timeout: float) -> None:
    """Removes a pod of the same name left by a different command, before running ours."""
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
    if not kube.wait(f"/api/v1/namespaces/{namespace}/pods", lambda pods: not pods, timeout,
                     fieldSelector=f"metadata.name={name}"):
        raise RuntimeError(f"pod {namespace}/{name} is still being deleted")
