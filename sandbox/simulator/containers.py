"""The container engine's side of a shared-kernel sandbox, where every node is a container on this
machine (as kind's nodes are): when each node container last started, and restart requests.

Two kinds of file live in ``STATE_DIR/containers/``, so the simulator and the sandbox's `docker`
stand-in (`sandbox.docker_shim`, another process) never write the same file:

- ``<node>.json``, written by the simulator each time the node's container starts:
  ``{"name", "startedAt", "restarts"}``, ``startedAt`` in the form `docker inspect` prints.
- ``<node>.restart``, left by ``docker restart <node>``; the simulator removes it and restarts the
  container.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

CONTAINERS_DIR = "containers"
_REQUEST_SUFFIX = ".restart"


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    startedAt: str  # noqa: N815 - the engine's own spelling, as `docker inspect` shows it
    restarts: int = 0


def containers_dir(state_dir: Path) -> Path:
    return state_dir / CONTAINERS_DIR


def docker_time(nanoseconds: int) -> str:
    """A UTC instant as Docker prints ``State.StartedAt``: Go's RFC 3339 with nanoseconds, trailing
    zeros of the fraction dropped (``2026-01-02T03:04:05.12345Z``)."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def read_container(state_dir: Path, node: str) -> ContainerRecord | None:
    try:
        raw = json.loads((containers_dir(state_dir) / f"{node}.json").read_text())
    except FileNotFoundError:
        return None
    return ContainerRecord(**raw)


def record_start(state_dir: Path, node: str) -> ContainerRecord:
    """The node's container (re)started now; the first start counts no restart."""
    earlier = read_container(state_dir, node)
    record = ContainerRecord(name=node, startedAt=docker_time(time.time_ns()),
                             restarts=earlier.restarts + 1 if earlier else 0)
    _write_atomically(containers_dir(state_dir) / f"{node}.json", json.dumps(asdict(record)))
    return record


def request_restart(state_dir: Path, node: str) -> None:
    _write_atomically(containers_dir(state_dir) / f"{node}{_REQUEST_SUFFIX}", uuid.uuid4().hex)


def take_restart_requests(state_dir: Path) -> list[str]:
    """The nodes whose restart was asked for since the last call; each request is consumed."""
    directory = containers_dir(state_dir)
    if not directory.is_dir():
        return []
    nodes = []
    for request in sorted(directory.glob(f"*{_REQUEST_SUFFIX}")):
        try:
            request.unlink()
        except FileNotFoundError:
            continue
        nodes.append(request.name.removesuffix(_REQUEST_SUFFIX))
    return nodes


def _write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    partial.write_text(content)
    partial.replace(path)  # a reader never sees half a file
