"""The interface every reboot strategy implements, and the strategies by name (the spec's
`reboot.strategy` values)."""

from __future__ import annotations

from typing import Protocol

from activities.kubeapi import Kube, Obj
from activities.reboot.command import CommandReboot
from activities.reboot.docker import DockerReboot
from activities.reboot.node_shell import NodeShellReboot
from plan.contract import RebootInput


class RebootStrategy(Protocol):
    # What `boot_witness` reads, in words for the operator ("bootID", "container start time").
    witness_name: str

    def boot_witness(self, kube: Kube, node: Obj) -> str:
        """What changes when the node reboots, as this strategy can see it: the bootID of a
        machine, the start time of a container node. Read before the reboot is ever triggered
        (the snapshot) and while waiting for it, so a retry knows a reboot already happened."""

    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        """Asks the node to reboot; safe to call again for the same boot witness."""

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        """Tidies up once the wait is over; returns a note for the operator if it failed."""


def strategies(docker: str = "docker") -> dict[str, RebootStrategy]:
    return {"node-shell": NodeShellReboot(), "docker": DockerReboot(docker),
            "command": CommandReboot()}
