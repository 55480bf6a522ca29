"""Per-node lanes for the simulator's API writes: each node's kubelet is its own process.

A kubelet's status patches, pod deletions and lease renewals go out in the order it made them,
and never wait behind another node's. The simulator decides everything on one dispatcher thread;
if that thread also waited for every write, a burst on some nodes (ten nodes booting, each
patching its node and every pod) would hold back the timers of all the others: with a loaded
API server at 20 nodes a reboot of 1 s took up to 3.4 s. So the dispatcher only hands its writes
to the node's lane; a few threads serve the lanes, one lane at a time per thread, so one node's
writes stay in order while other nodes' go on beside them.

A write is built (its body) on the dispatcher thread and only sent here: lane actions touch no
simulator state.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sandbox.simulator")

# The Kubernetes client's connection pool keeps cpu_count * 5 connections (10 on two cores); the
# dispatcher and the simulator's four watches hold five of them.
LANE_THREADS = 4


class Lanes:
    def __init__(self, threads: int = LANE_THREADS) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[tuple[Callable[..., Any], tuple[Any, ...]]]] = {}
        self._ready: queue.Queue[str] = queue.Queue()
        for index in range(threads):
            threading.Thread(target=self._serve, name=f"lane-{index}", daemon=True).start()

    def submit(self, lane: str, action: Callable[..., Any], *args: Any) -> None:
        """Runs ``action(*args)`` after every action submitted to ``lane`` before it."""
        with self._lock:
            pending = self._pending.get(lane)
            if pending is not None:  # the lane is queued or being served: it will get there
                pending.append((action, args))
                return
            self._pending[lane] = deque([(action, args)])
        self._ready.put(lane)

    def _serve(self) -> None:
        while True:
            lane = self._ready.get()
            while True:
                with self._lock:
                    pending = self._pending[lane]
                    if not pending:
                        del self._pending[lane]
                        break
                    action, args = pending.popleft()
                try:
                    action(*args)
                except Exception:  # noqa: BLE001 - one failed write must not stop the lane
                    log.exception("lane %s: %s failed", lane, getattr(action, "__name__", action))
