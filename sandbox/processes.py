"""Background processes of a sandbox: started detached, recorded by PID, stopped by PID.

A sandbox outlives the command that started it, so every process runs in its own session with
its output in ``STATE_DIR/logs``. Stopping checks that a recorded PID still runs the program we
started (PIDs get reused) before signalling it, and touches nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(name: str, argv: list[str], log_dir: Path,
                  env: dict[str, str] | None = None) -> int:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    return process.pid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` runs: a zombie (ended, not yet reaped by its parent) has ended."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def is_running(pid: int, program: str) -> bool:
    """True when ``pid`` is alive and still runs ``program`` (a path or module name)."""
    return alive(pid) and program in _cmdline(pid)


def stop_process(pid: int, program: str, timeout: float = 15.0) -> bool:
    """Stops one recorded process; returns False if it was not running any more."""
    if not is_running(pid, program):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid, program):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True
