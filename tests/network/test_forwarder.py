"""ApiForwarder: node namespaces reach a server listening on 127.0.0.1 through the gateway."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.network import netns
from sandbox.network.forwarder import ApiForwarder
from sandbox.network.plan import NetworkPlan
from sandbox.network.underlay import boot_node, create_underlay

SAFETY = 30.0  # only against a hang; no test waits for it


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Server:
    """A loopback server running ``handle`` on each connection in a thread of its own."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(SAFETY)
            try:
                self.handle(conn)
            except BaseException as error:  # reported by the test
                self.errors.append(error)

    def close(self) -> None:
        # shutdown wakes the accepting thread on Linux; close alone would not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(SAFETY)


def _echo_until_eof(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


@pytest.fixture
def echo() -> Iterator[Server]:
    server = Server(_echo_until_eof)
    yield server
    server.close()
    assert not server.errors


@pytest.fixture
def forwarder(echo: Server) -> Iterator[ApiForwarder]:
    with ApiForwarder("127.0.0.1", 0, "127.0.0.1", echo.port) as running:
        yield running


def _connect(forwarder: ApiForwarder) -> socket.socket:
    sock = socket.create_connection(forwarder.address, timeout=SAFETY)
    return sock


def test_node_namespace_reaches_loopback_server_through_gateway(
        make_plan: Callable[..., NetworkPlan]) -> None:
    plan = make_plan(["n1"])
    create_underlay(plan)
    boot_node(plan, "n1")
    received: list[bytes] = []

    def reply_after_eof(conn: socket.socket) -> None:
        received.append(_read_all(conn))
        conn.sendall(b"pong:" + received[0])

    server = Server(reply_after_eof)
    try:
        with ApiForwarder(plan.gateway, 0, "127.0.0.1", server.port) as running:
            port = running.address[1]
            client = (
                "import socket, sys\n"
                f"s = socket.create_connection(({plan.gateway!r}, {port}), timeout=30)\n"
                "s.sendall(b'ping'); s.shutdown(socket.SHUT_WR)\n"
                "data = b''\n"
                "while chunk := s.recv(4096): data += chunk\n"
                "sys.stdout.write(data.decode())\n")
            result = netns.run_in(plan.node_netns("n1"), [sys.executable, "-c", client],
                                  timeout=SAFETY)
            assert result.returncode == 0, result.stderr
            assert result.stdout == "pong:ping"
    finally:
        server.close()
    assert received == [b"ping"] and not server.errors
    # From inside the node, the host's 127.0.0.1 is not the API server's.
    direct = netns.run_in(plan.node_netns("n1"), [sys.executable, "-c", (
        "import socket\n"
        f"print(socket.socket().connect_ex(('127.0.0.1', {server.port})))\n")])
    assert direct.stdout.strip() != "0"


def test_many_concurrent_connections(forwarder: ApiForwarder) -> None:
    def exchange(index: int) -> bool:
        # Up to 2 MiB: more than the forwarder buffers, so its flow control is exercised.
        repeat = 65536 if index % 100 == 0 else 1 + (index % 40) * 200
        payload = hashlib.sha256(str(index).encode()).digest() * repeat
        with _connect(forwarder) as sock:
            # Read while sending, as the echo comes back before the sending is done.
            reader_result: list[bytes] = []
            reader = threading.Thread(target=lambda: reader_result.append(_read_all(sock)))
            reader.start()
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reader.join(SAFETY)
            return reader_result == [payload]

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(exchange, range(400)))
    assert all(results)
    assert forwarder.accepted == 400 and forwarder.refused == 0
    forwarder.stop()
    assert forwarder.active == 0


def test_half_close_from_the_server_side() -> None:
    after: list[bytes] = []
    done = threading.Event()

    def greet_then_listen(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        after.append(_read_all(conn))
        done.set()

    server = Server(greet_then_listen)
    try:
        with ApiForwarder("127.0.0.1", 0, "127.0.0.1", server.port) as running, \
                _connect(running) as sock:
            assert _read_all(sock) == b"hello"
            sock.sendall(b"still talking")  # the other direction stays open
            sock.shutdown(socket.SHUT_WR)
            assert done.wait(SAFETY)
    finally:
        server.close()
    assert after == [b"still talking"] and not server.errors


def test_target_refusing_resets_the_client() -> None:
    # Bound, not listening: connections to it are refused for as long as it is held.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        with ApiForwarder("127.0.0.1", 0, "127.0.0.1", closed.getsockname()[1]) as running:
            for _ in range(3):
                try:
                    sock = _connect(running)
                except ConnectionResetError:
                    continue  # the reset can come before connect() returns: the same answer
                with sock:
                    try:
                        data = sock.recv(1)
                    except ConnectionResetError:
                        data = b""
                    assert data == b""
            assert running.refused == 3


def _echo_until_reset(conn: socket.socket) -> None:
    with contextlib.suppress(ConnectionResetError):
        _echo_until_eof(conn)


def test_stop_ends_connections_and_is_idempotent() -> None:
    echo = Server(_echo_until_reset)
    running = ApiForwarder("127.0.0.1", 0, "127.0.0.1", echo.port)
    running.start()
    address = running.address
    sock = _connect(running)
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    running.stop()
    running.stop()
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b""
    sock.close()
    with socket.socket() as probe:
        assert probe.connect_ex(address) != 0
    echo.close()
    assert not echo.errors


def test_start_on_a_taken_address_raises(echo: Server) -> None:
    taken = ApiForwarder("127.0.0.1", echo.port, "127.0.0.1", echo.port)
    with pytest.raises(OSError):
        taken.start()
    taken.stop()  # never started: nothing to do

