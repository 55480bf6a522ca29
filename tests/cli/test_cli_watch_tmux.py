"""`status --watch` on a real terminal (tmux): one frame redrawn in place as the run moves, no
full-screen clears between frames, and the watch ends with the run (exit 2: aborted)."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, Cli, Migrations, cli_env

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install -y tmux)")


class Tmux:
    """A private tmux server (its own socket), so no user session is touched."""

    def __init__(self) -> None:
        self.socket = f"cilium-migrate-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "watch")

    def everything(self) -> str:
        return self("capture-pane", "-p", "-S", "-", "-t", "watch")

    async def until(self, check: Callable[[str], bool], what: str) -> str:
        for _ in range(300):
            screen = self.screen()
            if check(screen):
                return screen
            await asyncio.sleep(0.1)
        raise AssertionError(f"the terminal never showed {what}:\n{screen}")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    yield server
    subprocess.run(["tmux", "-L", server.socket, "kill-server"], capture_output=True)


async def test_watch_redraws_in_place_and_ends_with_the_run(
        cli: Cli, migrations: Migrations, tmux: Tmux, address: str, tmp_path: Path) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates == ["install"], "the install gate")
    raw, go = tmp_path / "raw.out", tmp_path / "go"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli_env(address).items()
                   if k in ("TEMPORAL_ADDRESS", "TEMPORAL_CONFIG_FILE", "PYTHONPATH", "PATH",
                            "HOME", "USER"))
    watch = (f"cd {shlex.quote(str(REPO))}; until [ -e {go} ]; do sleep 0.05; done; "
             f"env {env} TERM=xterm-256color {sys.executable} -m client.cli status {name} "
             f"--watch --interval 0.2; echo EXIT=$?; sleep 600")
    tmux("new-session", "-d", "-s", "watch", "-x", "150", "-y", "50", watch)
    tmux("pipe-pane", "-t", "watch", "-o", f"cat >> {raw}")
    go.touch()

    first = await tmux.until(lambda s: f"approve {name} install" in s, "the install gate")
    assert first.splitlines()[0].startswith(f"Cluster {name}   phase preflight")
    approved = await cli("approve", name, "install")
    assert approved.code == 0, approved
    later = await tmux.until(lambda s: f"approve {name} wave-1" in s, "the wave-1 gate")
    assert f"approve {name} install" not in later
    # The approval, now in the same frame: the claimed name, then the sending client.
    assert any(line.split()[:3] == ["install", "alice", f"alice@{socket.gethostname()}"]
               for line in later.splitlines()), later

    aborted = await cli("abort", name)
    assert aborted.code == 0, aborted
    final = await tmux.until(lambda s: "EXIT=" in s, "the end of the watch")
    assert "EXIT=2" in final and f"Cluster {name}   phase cancelled" in final
    # One frame, redrawn in place: the header was never pushed up into the scrollback.
    assert tmux.everything().count(f"Cluster {name}") == 1
    written = raw.read_bytes()
    assert written.count(b"\x1b[2J") <= 1  # no full clear between frames: no flicker
    assert written.count(b"\x1b[H") >= 3 and b"\x1b[?25h" in written  # cursor shown again
