"""What /proc says about a process, for the benchmarks' figures."""

from __future__ import annotations

from pathlib import Path


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """A memory figure of /proc/PID/status in MiB (VmRSS now, VmHWM the peak); None when the
    process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
