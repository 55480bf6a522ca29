"""What the sandbox reads from a container's image reference and arguments: which program a
pod runs is decided by its image name, as the images themselves decide it."""

from __future__ import annotations

from typing import Any

AGNHOST_NETEXEC_HTTP_PORT = 8080  # agnhost netexec's `--http-port` default


def image_name(container: dict[str, Any]) -> str:
    """The image's last path element without tag or digest: ``registry.k8s.io/coredns/
    coredns:v1.12.1`` is ``coredns``."""
    reference = str(container.get("image", "")).split("@", 1)[0].rsplit("/", 1)[-1]
    return reference.split(":", 1)[0]


def agnhost_args(container: dict[str, Any]) -> list[str] | None:
    """What an agnhost container asks agnhost for: its command (without a leading ``agnhost``)
    and args; None when the image is not agnhost."""
    if image_name(container) != "agnhost":
        return None
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if argv and argv[0].rsplit("/", 1)[-1] == "agnhost":
        argv = argv[1:]
    return argv


def netexec_http_port(container: dict[str, Any]) -> int | None:
    """The port an agnhost container serves HTTP on with ``netexec`` (its ``--http-port``,
    8080 unless given); None when the container does not run agnhost netexec."""
    argv = agnhost_args(container)
    if not argv or argv[0] != "netexec":
        return None
    port = str(AGNHOST_NETEXEC_HTTP_PORT)
    for index, arg in enumerate(argv):
        if arg.startswith("--http-port="):
            port = arg.split("=", 1)[1]
        elif arg == "--http-port" and index + 1 < len(argv):
            port = argv[index + 1]
    return int(port) if port.isdigit() else None
