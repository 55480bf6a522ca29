"""The egress proxy the API server's pod, service and node proxies dial through."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.egress import EgressProxy, socket_path, write_config


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[EgressProxy]:
    running = EgressProxy(tmp_path / "egress.sock",
                          lambda host, port: None if host == "127.0.0.1" else f"{host}: no")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def ask(proxy: EgressProxy, request: bytes) -> tuple[socket.socket, bytes]:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(proxy.path))
    client.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = client.recv(1024)
        if not chunk:
            break
        answer += chunk
    return client, answer


def test_an_allowed_target_is_connected_both_ways(proxy: EgressProxy, echo_port: int) -> None:
    client, answer = ask(proxy, f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n".encode())
    with client:
        assert answer.startswith(b"HTTP/1.1 200 ")
        client.sendall(b"hello")
        assert client.recv(1024) == b"HELLO"


def test_a_refused_target_gets_the_reason_in_the_status_line(proxy: EgressProxy) -> None:
    client, answer = ask(proxy, b"CONNECT 10.244.1.5:8080 HTTP/1.1\r\nHost: x\r\n\r\n")
    client.close()
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden: 10.244.1.5: no"
    assert proxy.refused == ["10.244.1.5:8080: 10.244.1.5: no"]


def test_anything_but_connect_is_refused(proxy: EgressProxy) -> None:
    client, answer = ask(proxy, b"GET / HTTP/1.1\r\n\r\n")
    client.close()
    assert answer.startswith(b"HTTP/1.1 405 ")


def test_a_long_state_dir_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert len(str(socket_path(deep))) <= 107
    assert socket_path(tmp_path) == tmp_path / "egress.sock"
    config = write_config(tmp_path).read_text()
    assert "HTTPConnect" in config and str(tmp_path / "egress.sock") in config
