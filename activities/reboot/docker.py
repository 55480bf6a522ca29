"""Reboot for kind and similar clusters, whose nodes are containers named like the nodes:
restarting the container is the node's reboot.

Such a node shares its host's kernel, so its bootID never changes; the reboot shows in the
container's start time instead (`docker inspect`), which every start of the container sets.
"""

from __future__ import annotations

import subprocess

from activities.context import step_error
from activities.kubeapi import Kube, Obj
from activities.reboot.command import CommandReboot
from plan.contract import StepError

INSPECT_TIMEOUT_SECONDS = 60


class DockerReboot(CommandReboot):
    witness_name = "container start time"

    def __init__(self, docker: str = "docker") -> None:
        super().__init__([docker, "restart", "{node}"])
        self.docker = docker

    def boot_witness(self, kube: Kube, node: Obj) -> str:
        name = node["metadata"]["name"]
        argv = [self.docker, "inspect", "-f", "{{.State.StartedAt}}", name]
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=INSPECT_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise step_error(StepError.BOOT_WITNESS_UNREADABLE,
                             f"cannot read the start time of node {name}'s container: "
                             f"{argv[0]} inspect failed: {error}") from error
        started = result.stdout.strip()
        if result.returncode != 0 or not started:
            raise step_error(StepError.BOOT_WITNESS_UNREADABLE,
                             f"cannot read the start time of node {name}'s container: "
                             f"{' '.join(argv)} exited {result.returncode}: "
                             f"{result.stderr.strip() or 'no output'}")
        return started
