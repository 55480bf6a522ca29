"""`cilium-migrate sandbox ...` as a user runs it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.toolchain import Toolchain
from tests.conftest import Sandbox

pytestmark = pytest.mark.sandbox


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragment", [
    (("--nodes", "0"), "--nodes must be at least 1"),
    (("--nodes", "2", "--zones", "0"), "--zones must be at least 1"),
    (("--nodes", "2", "--control-planes", "3"), "cannot exceed --nodes"),
])
def test_up_rejects_bad_sizes(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    result = cli("sandbox", "up", "--state-dir", str(tmp_path / "s"), *args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "s").exists()  # nothing was started or written


def test_up_refuses_the_state_dir_of_a_running_sandbox(sandbox: Sandbox) -> None:
    result = cli("sandbox", "up", "--nodes", "1", "--state-dir", str(sandbox.state_dir))
    assert_one_line_error(result, "is busy", "sandbox down")
    assert cli("sandbox", "status", "--state-dir", str(sandbox.state_dir)).returncode == 0


def test_up_names_missing_binaries(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CILIUM_MIGRATE_CACHE": str(tmp_path / "empty-cache"),
           "HOME": str(tmp_path)}
    result = cli("sandbox", "up", "--nodes", "1", "--state-dir", str(tmp_path / "s"), env=env)
    assert_one_line_error(result, "not built", "kube-apiserver", "sandbox build")


def test_status_of_a_missing_sandbox_is_a_clear_error(tmp_path: Path) -> None:
    assert_one_line_error(cli("sandbox", "status", "--state-dir", str(tmp_path)),
                          "no sandbox in")


def test_a_second_sandbox_runs_beside_the_first_and_stops_cleanly(
        sandbox: Sandbox, toolchain: Toolchain, tmp_path: Path) -> None:
    state_dir = tmp_path / "second"
    started = cli("sandbox", "up", "--nodes", "2", "--control-planes", "0",
                  "--state-dir", str(state_dir))
    assert started.returncode == 0, started.stderr
    try:
        report = json.loads(cli("sandbox", "status", "-o", "json",
                                "--state-dir", str(state_dir)).stdout)
        assert report["cluster"] == {"nodes": 2, "ready": 2, "flannel_running": 2,
                                     "flannel_registered": 2}
        assert report["server"] != json.loads(cli(
            "sandbox", "status", "-o", "json", "--state-dir", str(sandbox.state_dir)).stdout
        )["server"]
        nodes = subprocess.run([str(toolchain["kubectl"]), "--kubeconfig",
                                str(state_dir / "kubeconfig"), "get", "nodes", "-o", "name"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert nodes == ["node/worker-1", "node/worker-2"]
    finally:
        stopped = cli("sandbox", "down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0
    assert "kube-apiserver" in stopped.stdout and "node-simulator" in stopped.stdout
    after = json.loads(cli("sandbox", "status", "-o", "json",
                           "--state-dir", str(state_dir)).stdout)
    assert not any(p["running"] for p in after["processes"].values())
    assert (state_dir / "kubeconfig").exists()  # down removes nothing
    # The first sandbox is untouched.
    assert cli("sandbox", "status", "--state-dir", str(sandbox.state_dir)).returncode == 0
    again = cli("sandbox", "up", "--nodes", "1", "--state-dir", str(state_dir))
    assert_one_line_error(again, "holds a stopped sandbox", "--replace")


def test_fault_command_edits_the_fault_file(tmp_path: Path) -> None:
    state = ("--state-dir", str(tmp_path))
    assert cli("sandbox", "fault", "set", "worker-1", "probe-fails", *state).returncode == 0
    assert cli("sandbox", "fault", "set", "worker-1", "ignore-termination", *state).returncode == 0
    listed = cli("sandbox", "fault", "list", *state).stdout
    assert listed.strip() == "worker-1: ignore-termination, probe-fails"
    assert cli("sandbox", "fault", "clear", "worker-1", "probe-fails", *state).returncode == 0
    assert cli("sandbox", "fault", "list", *state).stdout.strip() == "worker-1: ignore-termination"
    bad = cli("sandbox", "fault", "set", "worker-1", "melts", *state)
    assert bad.returncode == 1 and "invalid choice" in bad.stderr  # a usage error: bad input
