"""A benchmark's life: an overall deadline, and Ctrl-C or SIGTERM that stop what it started.

A sandbox and a dev server outlive the Python process that started them (their own sessions),
so a benchmark that is killed or hangs would leave them running. `guard` turns SIGALRM (the
deadline), SIGINT and SIGTERM into a stop where the benchmark is: while the event loop waits,
its main task is cancelled, so the worker and clients shut down in order; in blocking code such
as `sandbox up`, `BenchStopped` is raised right there. Either way the benchmark's own `finally`
blocks stop everything. `BenchStopped` derives from SystemExit so that asyncio lets it out of
any task and no `except Exception` swallows it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from sandbox import cluster

_SIGNALS = (signal.SIGALRM, signal.SIGINT, signal.SIGTERM)


class BenchStopped(SystemExit):
    def __init__(self, reason: str) -> None:
        super().__init__(1)
        self.reason = reason


class Stage:
    """What the benchmark is doing now, for the message when it is stopped."""

    def __init__(self) -> None:
        self.now = "starting"
        self.stopped = ""  # why the benchmark was stopped, once it was
        self.task: asyncio.Task[None] | None = None  # the benchmark's main task, if async

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
            stage.stopped = f"deadline of {deadline_seconds:.0f}s passed while {stage.now}"
        else:
            stage.stopped = f"{signal.Signals(signum).name} while {stage.now}"
        task = stage.task
        if task is not None and not task.done():
            loop = task.get_loop()
            if asyncio.current_task(loop) is not task:  # the loop waits, or another task runs
                loop.call_soon_threadsafe(task.cancel)
                return
        raise BenchStopped(stage.stopped)

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


def children() -> dict[int, str]:
    """This process's child processes (PID: command name), e.g. a Helm the worker started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if int(rest.split()[1]) == os.getpid() and rest.split()[0] != "Z":
            found[int(entry.name)] = name
    return found


def stop_children(keep: set[int], timeout: float = 5.0) -> list[str]:
    """Stops this process's children but those in ``keep``: an activity's Helm or kubectl
    would otherwise outlive the benchmark and wait for a cluster that is gone."""
    targets = {pid: name for pid, name in children().items() if pid not in keep}
    for pid in targets:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(targets) & set(children()):
        time.sleep(0.1)
    for pid in set(targets) & set(children()):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"{name} ({pid})" for pid, name in targets.items()]


def stop_sandbox(state_dir: Path) -> None:
    """Stops the benchmark's sandbox, if it got as far as starting, and says what was running."""
    if (state_dir / "state.json").exists():
        stopped = cluster.down(state_dir)
        print(f"sandbox stopped ({', '.join(stopped) or 'nothing was running'})",
              file=sys.stderr)


def run_blocking(name: str, deadline_seconds: float, work: Callable[[Stage], None]) -> None:
    """Runs a blocking benchmark's ``work`` under `guard`; its `finally` blocks have stopped
    what it started by the time this exits the process with why it stopped or failed."""
    stage = Stage()
    try:
        with guard(deadline_seconds, stage):
            work(stage)
    except BenchStopped as stopped:
        sys.exit(f"{name} stopped: {stopped.reason}")
    except Exception:  # noqa: BLE001 - say why and leave
        traceback.print_exc()
        sys.exit(f"{name} failed while {stage.now}")
