"""A benchmark's life: an overall deadline, and Ctrl-C or SIGTERM that stop what it started.

A sandbox and a dev server outlive the Python process that started them (their own sessions),
so a benchmark that is killed or hangs would leave them running. `guard` turns SIGALRM (the
deadline), SIGINT and SIGTERM into `BenchStopped` raised where the benchmark is, even inside a
blocking call such as `sandbox up`; the benchmark's own `finally` blocks then stop everything.
`BenchStopped` derives from SystemExit so that asyncio lets it out of any task and no
`except Exception` swallows it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGALRM, signal.SIGINT, signal.SIGTERM)


class BenchStopped(SystemExit):
    def __init__(self, reason: str) -> None:
        super().__init__(1)
        self.reason = reason


class Stage:
    """What the benchmark is doing now, for the message when it is stopped."""

    def __init__(self) -> None:
        self.now = "starting"

    def __call__(self, now: str) -> None:
        self.now = now
        print(f"[{now}]", file=sys.stderr, flush=True)


@contextmanager
def guard(deadline_seconds: float, stage: Stage) -> Iterator[None]:
    """Within the block, the deadline or a signal raises `BenchStopped` once; a second signal
    while the benchmark cleans up is ignored, so cleaning up is not cut short."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for number in _SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        signal.alarm(0)
        if signum == signal.SIGALRM:
            raise BenchStopped(f"deadline of {deadline_seconds:.0f}s passed while {stage.now}")
        raise BenchStopped(f"{signal.Signals(signum).name} while {stage.now}")

    previous = {number: signal.signal(number, stop) for number in _SIGNALS}
    signal.alarm(max(1, round(deadline_seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        for number, handler in previous.items():
            signal.signal(number, handler)


def cleaning_up() -> None:
    """From here on the deadline and signals no longer interrupt: the benchmark is stopping
    what it started, and being cut short would leave some of it running."""
    signal.alarm(0)
    for number in _SIGNALS:
        signal.signal(number, signal.SIG_IGN)
