"""Per-node fault injection, read from ``STATE_DIR/faults.yaml``.

The file maps node names to lists of fault names, for example::

    worker-2: [probe-fails]
    worker-3: [reboot-never-completes, ignore-termination]

The simulator rereads it whenever it changes; `cilium-migrate sandbox fault` edits it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml


class Fault(StrEnum):
    # The node stays NotReady after a reboot; clearing the fault then boots it (a power cycle).
    REBOOT_NEVER_COMPLETES = "reboot-never-completes"
    AGENT_NEVER_READY = "agent-never-ready"  # the Cilium agent on the node never turns Ready
    PROBE_FAILS = "probe-fails"  # probe pods on the node reach nothing
    IGNORE_TERMINATION = "ignore-termination"  # containers ignore SIGTERM: full grace period
    # A firewall on the node drops UDP to and from Cilium's tunnel port (the procedure's
    # pitfall of a port left closed): traffic to or from its Cilium pods across nodes is lost.
    CILIUM_TUNNEL_BLOCKED = "cilium-tunnel-blocked"


class FaultFileError(ValueError):
    pass


def read_faults(path: Path) -> dict[str, set[Fault]]:
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise FaultFileError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise FaultFileError(f"{path}: expected a mapping of node name to a list of faults")
    faults: dict[str, set[Fault]] = {}
    known = ", ".join(f.value for f in Fault)
    for node, names in raw.items():
        if not isinstance(names, list):
            raise FaultFileError(f"{path}: {node}: expected a list of faults ({known})")
        try:
            faults[str(node)] = {Fault(n) for n in names}
        except ValueError as error:
            raise FaultFileError(f"{path}: {node}: {error}; known faults: {known}") from error
    return faults


def write_faults(path: Path, faults: dict[str, set[Fault]]) -> None:
    data = {node: sorted(f.value for f in kinds) for node, kinds in sorted(faults.items()) if kinds}
    partial = path.with_suffix(".partial")
    try:
        partial.write_text(yaml.safe_dump(data))
        partial.replace(path)  # the simulator never reads a half-written file
    except OSError as error:
        raise FaultFileError(f"cannot write {path}: {error.strerror}") from None


class FaultBook:
    """The current faults, reloaded when the file's modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._faults: dict[str, set[Fault]] = {}

    def refresh(self) -> bool:
        """Rereads the file if it changed; True when it did."""
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._faults = read_faults(self.path)
            except FaultFileError:
                self._faults = {}
                raise
            return True
        return False

    def has(self, node: str, fault: Fault) -> bool:
        return fault in self._faults.get(node, set())
