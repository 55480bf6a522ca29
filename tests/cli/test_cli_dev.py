"""`dev`: a local Temporal server with our search attributes plus a worker, both stopped by
Ctrl-C; its state lives in the given file."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from tests.cli.conftest import REPO, Cli, cli_env, run_cli
from tests.cli.test_cli_worker import free_port


async def test_dev_starts_server_and_worker_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    database = tmp_path / "state" / "temporal.db"
    env = cli_env(f"localhost:{port}")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client.cli", "dev", "--db-file", str(database),
        "--port", str(port), "--ui-port", str(ui_port), cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        banner = [(await asyncio.wait_for(process.stdout.readline(), 60)).decode()
                  for _ in range(3)]
        assert banner[0].split() == ["Temporal", f"localhost:{port}", "(namespace", "default)"]
        assert banner[1].split() == ["Web", "UI", f"http://localhost:{ui_port}"]
        assert banner[2].startswith("Worker       task queue cilium-migrate")
        listed = await run_cli("list", env=env)  # the search attributes are registered
        assert listed.code == 0 and listed.out == "No migrations.\n", listed
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert database.exists() and database.with_suffix(".log").exists()
    assert "stopping the Temporal dev server" in err.decode()
    with socket.socket() as probe:  # the server went away with it
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_dev_refuses_a_port_in_use(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await cli("dev", "--db-file", str(tmp_path / "t.db"), "--port", str(port),
                           "--headless")
    assert result.code == 1, result
    assert result.err == (f"error: port {port} on 127.0.0.1 is in use (is a server already "
                          "running? then run `cilium-migrate worker` alone)\n")
