"""A control-plane component is healthy only while its own process runs: a free port can be
taken by another program before the component binds it, and a health check answered on that
port by the other program must not pass for ours. Such a component is started again on fresh
ports."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from sandbox import controlplane
from sandbox.controlplane import ComponentExited, ControlPlane, wait_healthy


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def someone_else() -> Iterator[str]:
    """Another program answering 200 on a loopback port."""
    server = HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz"
    server.shutdown()


def exited_process() -> int:
    process = subprocess.Popen(["false"])
    process.wait()  # reaped: gone, as a component that failed to bind is
    return process.pid


def test_a_health_check_answered_by_another_program_does_not_pass_for_an_exited_component(
        someone_else: str, tmp_path: Path) -> None:
    with pytest.raises(ComponentExited, match="kube-scheduler exited before it was healthy"):
        wait_healthy(someone_else, "kube-scheduler", tmp_path / "log", 30, pid=exited_process())


def test_a_running_component_is_healthy_once_it_answers(someone_else: str,
                                                         tmp_path: Path) -> None:
    running = subprocess.Popen(["sleep", "60"])
    try:
        wait_healthy(someone_else, "kube-scheduler", tmp_path / "log", 30, pid=running.pid)
    finally:
        running.kill()
        running.wait()


def test_a_component_that_exits_is_started_again_on_fresh_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plane = ControlPlane.__new__(ControlPlane)  # no PKI or binaries: only the start loop
    plane.ports = {}
    ports = iter([4001, 4002, 4003])
    monkeypatch.setattr(controlplane, "free_port", lambda: next(ports))
    tried: list[int] = []

    def start() -> None:
        tried.append(plane.ports["scheduler"])
        if len(tried) < 3:
            raise ComponentExited("kube-scheduler exited before it was healthy")

    plane._started(("scheduler",), start)

    assert tried == [4001, 4002, 4003] and plane.ports["scheduler"] == 4003


def test_a_component_that_never_starts_fails_after_its_attempts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plane = ControlPlane.__new__(ControlPlane)
    plane.ports = {}
    monkeypatch.setattr(controlplane, "free_port", lambda: 4001)
    attempts = []

    def start() -> None:
        attempts.append(1)
        raise ComponentExited("etcd exited before it was healthy; see etcd.log")

    with pytest.raises(ComponentExited, match="see etcd.log"):
        plane._started(("etcd", "etcd-peer"), start)
    assert len(attempts) == controlplane.START_ATTEMPTS
