"""What the simulator remembers about each node and each pod it runs."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any

from sandbox.simulator.hostfs import HostFs
from sandbox.simulator.ipam import HostLocal
from sandbox.topology import NodeSpec

Obj = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_boot_id() -> str:
    return str(uuid.uuid4())


@dataclass
class NodeState:
    spec: NodeSpec
    host: HostFs
    boot_id: str = field(default_factory=new_boot_id)
    up: bool = True
    stuck_in_reboot: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    pod_cidr: str | None = None
    reported_ready: bool | None = None
    # Flannel: its daemon writes subnet.env, without which its CNI plugin fails.
    flannel_running: bool = False
    flannel_backend: dict[str, Any] = field(default_factory=dict)
    flannel_ipam: HostLocal | None = None
    # Cilium: the agent's configuration as read when it started (ConfigMap plus node overrides).
    agent_uid: str | None = None
    agent_ready: bool = False
    agent_config: dict[str, str] = field(default_factory=dict)
    # Where a starting agent waits: "crds" (for the operator to register them), "pod-cidrs"
    # (for the operator to write its CiliumNode's block); None when not starting.
    agent_stage: str | None = None
    cilium_ipam: HostLocal | None = None
    waiting_for_network: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.spec.name

    def network_ready(self) -> bool:
        """The runtime's NetworkReady: some CNI configuration exists on the host."""
        return self.up and self.host.active_cni() is not None


@dataclass
class PodState:
    uid: str
    namespace: str
    name: str
    node: str
    obj: Obj
    ip: str | None = None
    started: bool = False
    terminating: bool = False
    restarts: int = 0
    crashes: int = 0  # crashes since the containers were last Ready: the restart back-off
    start_time: str | None = None
    completed: bool = False  # ran to completion; later (stale) events must not restart it
    # The container statuses this simulator last wrote: events may lag behind them.
    container_statuses: list[Obj] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    @property
    def spec(self) -> Obj:
        spec: Obj = self.obj.get("spec", {})
        return spec

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.obj.get("metadata", {}).get("labels") or {}
        return labels

    @property
    def host_network(self) -> bool:
        return bool(self.spec.get("hostNetwork"))

    def containers(self) -> list[Obj]:
        containers: list[Obj] = self.spec.get("containers", [])
        return containers

    def env(self, name: str) -> str | None:
        for container in self.containers():
            for variable in container.get("env") or []:
                if variable.get("name") == name:
                    value: str | None = variable.get("value")
                    return value
        return None


def start_attempt(node: NodeState, pod: PodState) -> tuple[str, int]:
    """Which start of the pod's containers this is: a reboot (a new bootID) or a restart (one
    more restart) makes another. A timer or an answer meant for an earlier start is dropped."""
    return node.boot_id, pod.restarts
