"""Per-node lanes for the simulator's API writes: each node's kubelet is its own process.

A kubelet's status patches, pod deletions and lease renewals go out in the order it made them,
and never wait behind another node's. The simulator decides everything on one dispatcher thread;
if that thread also waited for every write, a burst on some nodes (ten nodes booting, each
patching its node and every pod) would hold back the timers of all the others: with a loaded
API server at 20 nodes a reboot of 1 s took up to 3.4 s. So the dispatcher only hands its writes
to the node's lane; a few threads serve the lanes, one lane at a time per thread, so one node's
writes stay in order while other nodes' go on beside them.

A write is built (its body) on the dispatcher thread and only sent here, and a read's answer
goes back to the dispatcher (`Simulator.read`): lane actions touch no simulator state.

A write the API server turns away for now (429 from API Priority and Fairness, a 5xx, a broken
connection) is sent again after a back-off, ahead of the lane's later writes: a kubelet's status
manager keeps syncing a pod's status until the server has it (`pkg/kubelet/status/
status_manager.go`, `syncBatch` on every change and every 10 s), so a busy API server delays a
status, it never loses it. Other errors (the object is gone, a conflict) end that write.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger("sandbox.simulator")

# Each kubelet is its own process: with a few threads for 1,000 nodes, a wave's reboots queued
# behind one another (at 1,000 nodes, 4 threads were all busy in a third of the samples of a
# wave). The client's pool (`activities.kubeapi.CONNECTIONS`) holds a connection for each.
LANE_THREADS = 32
# Back-off for writes the API server turned away for now; the status manager's own period is 10 s.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def transient(error: Exception) -> bool:
    """Whether the same write may succeed later: throttled, server trouble, a lost connection."""
    if isinstance(error, ApiException):
        return error.status in TRANSIENT_STATUSES
    return isinstance(error, HTTPError | ConnectionError | TimeoutError)


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
                self._send(lane, action, args)

    @staticmethod
    def _send(lane: str, action: Callable[..., Any], args: tuple[Any, ...]) -> None:
        wait = RETRY_FIRST_SECONDS
        while True:
            try:
                action(*args)
                return
            except Exception as error:  # noqa: BLE001 - one failed write must not stop the lane
                name = getattr(action, "__name__", action)
                if not transient(error):
                    log.exception("lane %s: %s failed", lane, name)
                    return
                log.info("lane %s: %s turned away (%s); again in %.1fs", lane, name, error, wait)
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_SECONDS)
