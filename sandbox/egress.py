"""Where the API server's connections into the cluster may go: its pod, service and node
proxies dial through this HTTP CONNECT proxy on a Unix socket, the way a cluster with
Konnectivity sends them through its proxy server (kube-apiserver `--egress-selector-config-file`,
egress type `cluster`).

The node simulator serves the socket and its datapath decides: on the simulated network pod IPs
are data, and this host's default route would carry a packet to them off the machine, so every
target is refused with the reason; on the real network, targets inside the sandbox's own
ranges are connected. Until the simulator runs, nothing listens and the API server's proxies
fail to dial, which also sends nothing anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import yaml

EGRESS_CONFIG = "egress-selector.yaml"
_SOCKET_NAME = "egress.sock"
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the final NUL
_HEAD_LIMIT = 8192
CONNECT_TIMEOUT = 10.0

# Why a target is refused, or None to connect it.
Policy = Callable[[str, int], str | None]


def socket_path(state_dir: Path) -> Path:
    """``STATE_DIR/egress.sock``, or a short path derived from it when that is too long."""
    path = state_dir / _SOCKET_NAME
    if len(str(path)) <= _MAX_UNIX_PATH:
        return path
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"cilium-migrate-egress-{digest}.sock"


def write_config(state_dir: Path) -> Path:
    """The API server's egress selector configuration: cluster traffic through our socket."""
    path = state_dir / EGRESS_CONFIG
    path.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {
            "proxyProtocol": "HTTPConnect",
            "transport": {"uds": {"udsName": str(socket_path(state_dir))}}}}]}))
    return path


class EgressProxy:
    """Serves HTTP CONNECT on a Unix socket; each accepted target is spliced on two threads."""

    def __init__(self, path: Path, policy: Policy) -> None:
        self.path, self.policy = path, policy
        self.refused: list[str] = []  # "host:port: reason", for tests and logs
        self._server: socket.socket | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        self.path.chmod(0o600)
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, daemon=True, name="egress").start()

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        server = self._server
        while server is not None and self._server is server:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
                chunk = client.recv(1024)
                if not chunk:
                    return
                head += chunk
            head, _, early = head.partition(b"\r\n\r\n")
            words = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
            if len(words) != 3 or words[0] != "CONNECT" or ":" not in words[1]:
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            host, _, port = words[1].rpartition(":")
            host = host.strip("[]")
            reason = self.policy(host, int(port)) if port.isdigit() else "no port"
            if reason is not None:
                self.refused.append(f"{host}:{port}: {reason}")
                # The API server quotes the status line, not the body: the reason goes there.
                phrase = "".join(c for c in reason if " " <= c <= "~")[:300]
                client.sendall(f"HTTP/1.1 403 Forbidden: {phrase}\r\nContent-Type: text/plain"
                               f"\r\nConnection: close\r\n\r\n{reason}\n".encode())
                return
            try:
                upstream = socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT)
            except OSError as error:
                client.sendall(f"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n"
                               f"{host}:{port}: {error}\n".encode())
                return
            with upstream:
                upstream.settimeout(None)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:
                    upstream.sendall(early)
                other = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                other.start()
                _pipe(client, upstream)
                other.join()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copies until ``source`` ends, then half-closes ``target``."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
