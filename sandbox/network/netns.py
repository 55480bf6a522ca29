"""Network namespaces, links and processes inside them, through iproute2's `ip` command.

Every name the sandbox creates starts with its sandbox prefix, so a crashed sandbox's leftovers
can be found and removed by the next `up --replace` or `down` without touching anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandbox.processes import alive

NETNS_DIR = Path("/run/netns")  # where `ip netns add` bind-mounts named namespaces


class NetworkError(RuntimeError):
    """A namespace, link or route could not be set up; the message says which and why."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Runs ``ip [-n NETNS] ARGS`` and returns its output; raises NetworkError on failure."""
    command = ["ip", *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result.stdout


def run_in(netns: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
           timeout: float | None = None, stdin: str | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a command inside ``netns`` to completion (never raises on its exit code)."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          env=dict(env) if env is not None else None, timeout=timeout,
                          input=stdin, cwd=cwd)


def spawn_in(netns: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts a long-running process inside ``netns`` in a session of its own, output to
    ``log``. `ip netns exec` execs the command, so the returned PID is the process itself."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        return subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL,
                                stdout=output, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd,
                                start_new_session=True)


def sysctl(netns: str, key: str, value: str) -> None:
    """Sets a per-namespace sysctl (``net.ipv4.ip_forward``...) inside ``netns``."""
    result = run_in(netns, ["sysctl", "-qw", f"{key}={value}"])
    if result.returncode != 0:
        raise NetworkError(f"sysctl {key}={value} in {netns} failed: {result.stderr.strip()}")


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def path(netns: str) -> Path:
    return NETNS_DIR / netns


def create(netns: str) -> None:
    """A new namespace with its loopback up (a fresh namespace's `lo` is down)."""
    ip("netns", "add", netns)
    ip("link", "set", "lo", "up", netns=netns)


def pids(netns: str) -> list[int]:
    if not exists(netns):
        return []
    out = ip("netns", "pids", netns, check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def kill_processes(netns: str, grace: float = 2.0) -> None:
    """Ends every process in ``netns``: SIGTERM, then SIGKILL after ``grace`` seconds."""
    running = pids(netns)
    for pid in running:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [pid for pid in running if alive(pid)]
    for pid in running:
        _signal(pid, signal.SIGKILL)


def delete(netns: str) -> None:
    """Removes ``netns`` after ending its processes; its links go with it (a veth's peer in
    another namespace too). Nothing happens when it does not exist."""
    if not exists(netns):
        return
    kill_processes(netns)
    ip("netns", "delete", netns, check=False)


def named(prefix: str) -> list[str]:
    """The namespaces whose name starts with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(entry.name for entry in NETNS_DIR.iterdir() if entry.name.startswith(prefix))


def links(prefix: str, netns: str | None = None) -> list[str]:
    """The links (in the root namespace unless ``netns``) whose name starts with ``prefix``."""
    names = []
    for line in ip("-o", "link", "show", netns=netns, check=False).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
