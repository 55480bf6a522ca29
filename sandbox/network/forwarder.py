"""A TCP forwarder from the underlay gateway to the API server, which listens on 127.0.0.1 only
(a node namespace's 127.0.0.1 is its own).

One thread multiplexes every connection with a selector, so hundreds of nodes' watches cost
sockets, not threads. Each direction is forwarded until its end-of-stream, then passed on as a
half-close; an error on either side resets both. A connection the target refuses is reset
right after it was accepted: the nearest a forwarder can come to the refusal itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import struct
import threading
import time

log = logging.getLogger("sandbox.network")

_CHUNK = 64 * 1024
_BUFFER_LIMIT = 256 * 1024  # per direction: stop reading while the other side is this far behind


class _Direction:
    """Bytes from ``source`` waiting to be written to ``sink``."""

    def __init__(self, source: socket.socket, sink: socket.socket) -> None:
        self.source, self.sink = source, sink
        self.buffer = bytearray()
        self.eof = False  # source sent its FIN
        self.shut = False  # and it was passed on to sink

    @property
    def done(self) -> bool:
        return self.shut

    def flush(self) -> None:
        while self.buffer:
            try:
                sent = self.sink.send(self.buffer)
            except BlockingIOError:
                return
            del self.buffer[:sent]
        if self.eof and not self.shut:
            self.shut = True
            try:
                self.sink.shutdown(socket.SHUT_WR)
            except OSError as error:  # the sink is gone too: nothing left to tell it
                if error.errno != errno.ENOTCONN:
                    raise


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket, deadline: float) -> None:
        self.client, self.upstream = client, upstream
        self.connecting = True
        self.deadline = deadline
        self.up = _Direction(client, upstream)
        self.down = _Direction(upstream, client)
        self.registered: dict[socket.socket, int] = {}

    def wanted(self, sock: socket.socket) -> int:
        if self.connecting:
            return selectors.EVENT_WRITE if sock is self.upstream else 0
        inbound = self.up if sock is self.client else self.down
        outbound = self.down if sock is self.client else self.up
        events = 0
        if not inbound.eof and len(inbound.buffer) < _BUFFER_LIMIT:
            events |= selectors.EVENT_READ
        if outbound.buffer:
            events |= selectors.EVENT_WRITE
        return events


class ApiForwarder:
    """Forwards ``listen_host:listen_port`` to ``target_host:target_port``; ``start`` binds (so
    a taken address raises there), ``stop`` closes everything and may be called any time."""

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int,
                 connect_timeout: float = 10.0) -> None:
        self.listen_host, self.listen_port = listen_host, listen_port
        self.target_host, self.target_port = target_host, target_port
        self.connect_timeout = connect_timeout
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._stopping = False
        self._connections: set[_Connection] = set()
        self._pending: set[_Connection] = set()  # still connecting to the target
        self._resume_at: float | None = None  # accepting paused, out of descriptors
        self._closed_since_pause = False
        self._target_family = socket.AF_INET
        self.accepted = 0
        self.refused = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port chosen by the kernel when ``listen_port`` was 0)."""
        if self._listener is None:
            raise RuntimeError("forwarder not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def active(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("forwarder already started")
        family, _, _, _, address = socket.getaddrinfo(
            self.listen_host, self.listen_port, type=socket.SOCK_STREAM)[0]
        self._target_family = socket.getaddrinfo(
            self.target_host, self.target_port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"api-forwarder-{self.address}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        assert self._wake_writer is not None
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        thread.join()
        for sock in (self._wake_reader, self._wake_writer, self._listener):
            if sock is not None:
                sock.close()
        self._thread = self._listener = self._wake_reader = self._wake_writer = None

    def __enter__(self) -> ApiForwarder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The loop thread owns the selector and every connection from here on.

    def _run(self) -> None:
        assert self._listener is not None and self._wake_reader is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        selector.register(self._wake_reader, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                for key, events in selector.select(self._timeout()):
                    if key.fileobj is self._listener:
                        if not self._accept(selector):
                            # Out of descriptors: pause until a connection closes or a while.
                            selector.unregister(self._listener)
                            self._resume_at = time.monotonic() + 0.5
                    elif key.fileobj is self._wake_reader:
                        continue
                    else:
                        connection: _Connection = key.data
                        sock = key.fileobj
                        if connection in self._connections and isinstance(sock, socket.socket):
                            self._service(selector, connection, sock, events)
                self._expire(selector)
                if self._resume_at is not None and (
                        self._resume_at <= time.monotonic() or self._closed_since_pause):
                    selector.register(self._listener, selectors.EVENT_READ, None)
                    self._resume_at, self._closed_since_pause = None, False
        except Exception:
            log.exception("API forwarder %s failed", self.address)
        finally:
            for connection in list(self._connections):
                self._close(selector, connection, reset=True)
            selector.close()

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self._pending]
        if self._resume_at is not None:
            deadlines.append(self._resume_at)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept(self, selector: selectors.BaseSelector) -> bool:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return True
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("API forwarder %s cannot accept: %s", self.address, error)
                    return False
                continue  # ECONNABORTED and the like: that client gave up; others wait
            self.accepted += 1
            try:
                upstream = socket.socket(self._target_family, socket.SOCK_STREAM)
            except OSError as error:
                log.warning("API forwarder %s cannot open a socket: %s", self.address, error)
                _reset(client)
                return False
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(client, upstream, time.monotonic() + self.connect_timeout)
            self._connections.add(connection)
            self._pending.add(connection)
            result = upstream.connect_ex((self.target_host, self.target_port))
            if result not in (0, errno.EINPROGRESS):
                self._refused(selector, connection, result)
                continue
            self._update(selector, connection)

    def _service(self, selector: selectors.BaseSelector, connection: _Connection,
                 sock: socket.socket, events: int) -> None:
        try:
            if connection.connecting:
                result = connection.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if result:
                    self._refused(selector, connection, result)
                    return
                connection.connecting = False
                self._pending.discard(connection)
            else:
                inbound = connection.up if sock is connection.client else connection.down
                outbound = connection.down if sock is connection.client else connection.up
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(_CHUNK)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        inbound.eof = True
                    elif data:
                        inbound.buffer += data
                    inbound.flush()
                if events & selectors.EVENT_WRITE:
                    outbound.flush()
        except OSError:
            # A reset or broken pipe on either side ends the whole connection, as it would
            # have ended a direct one.
            self._close(selector, connection, reset=True)
            return
        if connection.up.done and connection.down.done:
            self._close(selector, connection, reset=False)
        else:
            self._update(selector, connection)

    def _update(self, selector: selectors.BaseSelector, connection: _Connection) -> None:
        for sock in (connection.client, connection.upstream):
            wanted = connection.wanted(sock)
            current = connection.registered.get(sock, 0)
            if wanted == current:
                continue
            if not current:
                selector.register(sock, wanted, connection)
            elif not wanted:
                selector.unregister(sock)
            else:
                selector.modify(sock, wanted, connection)
            connection.registered[sock] = wanted

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for connection in [c for c in self._pending if c.deadline <= now]:
            self._refused(selector, connection, errno.ETIMEDOUT)

    def _refused(self, selector: selectors.BaseSelector, connection: _Connection,
                 result: int) -> None:
        self.refused += 1
        log.debug("API forwarder %s: target %s:%s: %s", self.address, self.target_host,
                  self.target_port, errno.errorcode.get(result, result))
        self._close(selector, connection, reset=True)

    def _close(self, selector: selectors.BaseSelector, connection: _Connection,
               reset: bool) -> None:
        for sock in (connection.client, connection.upstream):
            if connection.registered.get(sock):
                selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
        connection.registered.clear()
        self._connections.discard(connection)
        self._pending.discard(connection)
        self._closed_since_pause = True


def _reset(sock: socket.socket) -> None:
    """Closes with an RST rather than a FIN: the peer learns the connection failed."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
