"""Reboot for kind and similar clusters, whose nodes are containers named like the nodes:
restarting the container is the node's reboot."""

from __future__ import annotations

from activities.reboot.command import CommandReboot


class DockerReboot(CommandReboot):
    def __init__(self, docker: str = "docker") -> None:
        super().__init__([docker, "restart", "{node}"])
