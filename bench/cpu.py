"""Where the host's CPU went during a benchmark: a thread samples /proc every few seconds, and
the figures are read back per window (a migration phase, say). On a 2-core machine that runs
the control plane, the simulated kubelets, the Temporal server and the worker side by side, a
phase that is slower than its bound is either waiting for something or short of CPU; these
figures tell which."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, waited_children: bool = True) -> float:
    """User and system time of a process, and (``waited_children``) of the children it has
    waited for (a Helm the worker ran, say). Raises OSError when the process is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is fields[0], so utime is [11], stime [12], cutime [13],
    # cstime [14] (proc(5) numbers them 14 to 17).
    return sum(int(v) for v in fields[11:15 if waited_children else 13]) / TICKS


def host_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole host since boot, summed over its cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values[:8]) - idle) / TICKS, sum(values[:8]) / TICKS


@dataclass
class Sample:
    at: float  # time.time()
    host_busy: float
    host_all: float
    processes: dict[str, float]


@dataclass
class CpuSampler:
    """Samples the named processes (name: pid) and the host every ``interval`` seconds."""

    pids: dict[str, int]
    interval: float = 2.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        busy, total = host_cpu_seconds()
        processes = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):  # gone: left out of this sample
                processes[name] = process_cpu_seconds(pid)
        self.samples.append(Sample(time.time(), busy, total, processes))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def cores(self, start: float, end: float) -> tuple[float, dict[str, float]] | None:
        """Average cores busy between two times (time.time()): the host's, and each process's.
        None when fewer than two samples fall in the window."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        seconds = last.at - first.at
        host = (last.host_busy - first.host_busy) / seconds
        return host, {name: (last.processes[name] - first.processes[name]) / seconds
                      for name in last.processes if name in first.processes}
