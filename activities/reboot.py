"""Reboot a node, and run commands on a node's host, both through the host itself.

Strategies (a small interface, one class each): `node-shell`, a privileged host-PID pod pinned
to the node that asks the host's systemd to reboot (what kured does); `docker`, for kind nodes
that are containers; `command`, an operator's template such as an ssh call.

A reboot is done when the node reports a new bootID, is Ready, and runs a Ready Cilium agent
that started after the reboot. Retries never reboot twice: a changed bootID means done; the
node-shell pod has a name derived from the bootID it reboots away from, so a retry finds it;
the other strategies record in their heartbeat that they fired.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any, Protocol

from activities.context import get_node, heartbeat, record_node_event, resumed, step_error
from activities.kubeapi import Kube, Obj, condition_true, pod_finished, pod_ready
from plan.steps import HostCommandInput, RebootInput, RebootResult, StepError

AGENT_SELECTOR = "k8s-app=cilium"
SHELL_LABEL = "cilium-migrate.io/node-shell"
COMMAND_TIMEOUT_SECONDS = 300
# The host command the node workflow runs to roll a node back (it records an event on success).
ROLLBACK_COMMAND = "rollback"


# ---- node-shell pods ----------------------------------------------------------------------------

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


def shell_pod_name(*parts: str) -> str:
    """A valid pod name from parts (node names may hold dots and capitals)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", "-".join(("cilium-migrate", *parts)).lower())
    return name[:253].strip("-.")


def termination(pod: Obj) -> tuple[int | None, str]:
    """Exit code and termination message of the pod's first container."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode"), terminated.get("message") or ""
    return None, ""


def _pod_state(pod: Obj | None) -> str:
    if pod is None:
        return "gone"
    code, message = termination(pod)
    state = pod.get("status", {}).get("phase", "Pending")
    if code is not None:
        state += f" (exit {code}{': ' + message.strip() if message.strip() else ''})"
    return state


# ---- strategies ---------------------------------------------------------------------------------

class RebootStrategy(Protocol):
    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        """Asks the node to reboot; safe to call again for the same bootID."""

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        """Tidies up once the wait is over; returns a note for the operator if it failed."""


class NodeShellReboot:
    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        pod = node_shell_pod(self._name(request), request.target.node, request.image,
                             ["systemctl", "reboot"], purpose="reboot")
        kube.create(f"/api/v1/namespaces/{request.cilium_namespace}/pods", pod)  # 409: ours

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        path = f"/api/v1/namespaces/{request.cilium_namespace}/pods/{self._name(request)}"
        if rebooted:
            kube.delete(path)
            return ""
        # Kept, so that retrying the step waits for this reboot instead of asking again.
        return (f"reboot pod {request.cilium_namespace}/{self._name(request)} is "
                f"{_pod_state(kube.get_or_none(path))}; delete it to ask for a new reboot")

    @staticmethod
    def _name(request: RebootInput) -> str:
        return shell_pod_name("reboot", request.target.node, request.boot_id_before[:8])


class CommandReboot:
    """Runs a local command; ``{node}`` and ``{ip}`` in its arguments are substituted."""

    def __init__(self, argv: list[str] | None = None) -> None:
        self.argv = argv

    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        template = self.argv or request.command
        if not template:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             "the command reboot strategy needs a command")
        addresses = {a["type"]: a["address"] for a in node["status"].get("addresses") or []}
        values = {"node": request.target.node, "ip": addresses.get("InternalIP", "")}
        argv = [part.format(**values) for part in template]
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=COMMAND_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             f"reboot command {argv[0]} failed: {error}") from error
        if result.returncode != 0:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             f"reboot command {' '.join(argv)} exited {result.returncode}: "
                             f"{result.stderr.strip() or result.stdout.strip()}")

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        return ""


class DockerReboot(CommandReboot):
    """kind and similar: each node is a container named like the node."""

    def __init__(self, docker: str = "docker") -> None:
        super().__init__([docker, "restart", "{node}"])


def strategies(docker: str = "docker") -> dict[str, RebootStrategy]:
    return {"node-shell": NodeShellReboot(), "docker": DockerReboot(docker),
            "command": CommandReboot()}


# ---- the reboot step ----------------------------------------------------------------------------

def reboot_node(kube: Kube, request: RebootInput,
                known: dict[str, RebootStrategy]) -> RebootResult:
    name = request.target.node
    strategy = known[request.strategy]
    node = get_node(kube, name)
    earlier = resumed()
    if earlier.get("boot_id_before") != request.boot_id_before:
        earlier = {}
    deadline = time.monotonic() + request.timeout_seconds
    still_up = _boot_id(node) == request.boot_id_before
    progress: dict[str, Any] = {
        "boot_id_before": request.boot_id_before,
        "triggered": bool(earlier.get("triggered")),
        # The agent's containers before the reboot: the Ready status they still show right
        # after it is stale, so done means a Ready agent in other containers.
        "agent_containers": earlier.get("agent_containers") or (
            _agent_containers(kube, request) if still_up else []),
    }
    triggered = False
    if still_up and not progress["triggered"]:
        strategy.trigger(kube, node, request)
        triggered = progress["triggered"] = True
        record_node_event(kube, name, "CiliumMigrateRebootRequested",
                          f"reboot requested ({request.strategy}); bootID before: "
                          f"{request.boot_id_before}", uid=node["metadata"].get("uid"))
    heartbeat(**progress)

    stale = set(progress["agent_containers"])
    booted = kube.wait("/api/v1/nodes", lambda nodes: _booted(nodes, request),
                       request.timeout_seconds, on_tick=lambda: heartbeat(**progress),
                       fieldSelector=f"metadata.name={name}")
    agent = booted and kube.wait(
        f"/api/v1/namespaces/{request.cilium_namespace}/pods",
        lambda pods: any(pod_ready(p) and not stale & set(_containers(p)) for p in pods),
        deadline - time.monotonic(), on_tick=lambda: heartbeat(**progress),
        labelSelector=AGENT_SELECTOR, fieldSelector=f"spec.nodeName={name}")
    note = strategy.settle(kube, request, rebooted=bool(agent))
    if not booted or not agent:
        node = get_node(kube, name)
        if _boot_id(node) == request.boot_id_before:
            state = "its bootID has not changed"
        elif not condition_true(node, "Ready"):
            state = "it rebooted but is not Ready"
        else:
            state = "its Cilium agent is not Ready"
        raise step_error(StepError.REBOOT_NOT_COMPLETING,
                         f"node {name} did not come back within {request.timeout_seconds:.0f}s:"
                         f" {state}" + (f"; {note}" if note else ""))
    after = get_node(kube, name)
    record_node_event(kube, name, "CiliumMigrateRebooted",
                      f"rebooted: new bootID {_boot_id(after)} (was {request.boot_id_before}), "
                      "node Ready with a new Cilium agent", uid=after["metadata"].get("uid"))
    return RebootResult(boot_id_after=_boot_id(after), triggered=triggered)


def _boot_id(node: Obj) -> str:
    return str(node.get("status", {}).get("nodeInfo", {}).get("bootID", ""))


def _booted(nodes: list[Obj], request: RebootInput) -> bool:
    if not nodes:
        raise step_error(StepError.NODE_GONE, f"node {request.target.node} was deleted")
    node = nodes[0]
    return _boot_id(node) != request.boot_id_before and condition_true(node, "Ready")


def _containers(pod: Obj) -> list[str]:
    return [s["containerID"] for s in pod.get("status", {}).get("containerStatuses") or []
            if s.get("containerID")]


def _agent_containers(kube: Kube, request: RebootInput) -> list[str]:
    pods = kube.get(f"/api/v1/namespaces/{request.cilium_namespace}/pods",
                    labelSelector=AGENT_SELECTOR,
                    fieldSelector=f"spec.nodeName={request.target.node}")["items"]
    return [c for p in pods for c in _containers(p)]


# ---- host commands ------------------------------------------------------------------------------

def run_host_command(kube: Kube, request: HostCommandInput) -> None:
    """Runs ``request.script`` with the host's shell; fails with its output if it fails.

    Scripts should be idempotent: a retried step whose pod already finished reads that
    pod's outcome, but one whose pod was already cleaned up runs the script again.
    """
    node = request.target.node
    get_node(kube, node)
    name = shell_pod_name(request.name, node)
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
            state = _pod_state(kube.get_or_none(f"{pods}/{name}"))
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
    if request.name == ROLLBACK_COMMAND:
        record_node_event(kube, node, "CiliumMigrateRolledBack",
                          "rolled back: the host's CNI configuration is flannel's again")


def _delete_and_wait(kube: Kube, namespace: str, name: str, timeout: float) -> None:
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
    if not kube.wait(f"/api/v1/namespaces/{namespace}/pods", lambda pods: not pods, timeout,
                     fieldSelector=f"metadata.name={name}"):
        raise RuntimeError(f"pod {namespace}/{name} is still being deleted")
