"""Host tools the network tests run inside namespaces, from the project's own cache."""

from __future__ import annotations

import pytest


def ping_argv(address: str, wait_seconds: int = 2) -> list[str]:
    """One ICMP echo to ``address`` with busybox's ping (the host may have no ping of its
    own); skips the test when the network tools are not built."""
    from sandbox.nettools import find_network_tools
    from sandbox.toolchain import ToolchainError

    try:
        busybox = find_network_tools().busybox
    except ToolchainError as error:
        pytest.skip(str(error))
    return [str(busybox), "ping", "-c", "1", "-W", str(wait_seconds), address]
