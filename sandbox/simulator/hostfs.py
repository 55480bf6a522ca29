"""A simulated node's host: its CNI configuration directory and the few host commands we emulate.

Each node has a real directory, ``STATE_DIR/nodes/<node>/etc/cni/net.d``, so tests and operators
can look at what a real node would hold. As with the container runtime, the lexically first
``*.conf``/``*.conflist`` file there is the active CNI.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

CNI_DIR = "/etc/cni/net.d"
CILIUM_CONFLIST = "05-cilium.conflist"
BACKUP_SUFFIX = ".cilium_bak"
_CNI_SUFFIXES = (".conf", ".conflist", ".json")


@dataclass(frozen=True)
class HostFs:
    root: Path  # the node's simulated "/"

    @property
    def cni_dir(self) -> Path:
        return self.root / CNI_DIR.lstrip("/")

    def host_path(self, path: str) -> Path:
        """Maps an absolute host path into the simulated root (only the CNI dir exists)."""
        if not (path == CNI_DIR or path.startswith(CNI_DIR + "/")):
            raise HostCommandError(f"{path}: the sandbox host only has {CNI_DIR}")
        return self.root / path.lstrip("/")

    def cni_configs(self) -> list[str]:
        if not self.cni_dir.is_dir():
            return []
        return sorted(p.name for p in self.cni_dir.iterdir() if p.name.endswith(_CNI_SUFFIXES))

    def active_cni(self) -> str | None:
        configs = self.cni_configs()
        return configs[0] if configs else None

    def write_cni(self, name: str, content: str) -> None:
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        (self.cni_dir / name).write_text(content)

    def remove_cni(self, name: str) -> None:
        (self.cni_dir / name).unlink(missing_ok=True)

    def back_up_others(self, keep: str) -> list[str]:
        """What Cilium's `cni-exclusive` does: park every other CNI config as ``*.cilium_bak``."""
        moved = []
        for name in self.cni_configs():
            if name != keep:
                (self.cni_dir / name).replace(self.cni_dir / (name + BACKUP_SUFFIX))
                moved.append(name)
        return moved


class HostCommandError(Exception):
    pass


@dataclass(frozen=True)
class HostCommandResult:
    exit_code: int
    output: str
    reboot: bool = False


_REBOOT_COMMANDS = (("systemctl", "reboot"), ("reboot",), ("shutdown", "-r"))


def run_host_command(host: HostFs, argv: list[str]) -> HostCommandResult:
    """Runs what a node-shell pod asked the host to run, for the commands a migration needs.

    Supported: reboot (``systemctl reboot``, ``reboot``, ``shutdown -r``), ``rm``, ``mv``,
    ``cp``, ``test -e``, ``true``, and ``sh -c`` scripts joining those with ``&&`` and ``;``
    (no quoting of the separators themselves).
    """
    try:
        if argv[:1] in (["sh"], ["bash"], ["/bin/sh"], ["/bin/bash"]) and argv[1:2] == ["-c"]:
            return _run_script(host, argv[2] if len(argv) > 2 else "")
        return _run_simple(host, argv)
    except HostCommandError as error:
        return HostCommandResult(1, str(error))


def _run_script(host: HostFs, script: str) -> HostCommandResult:
    """``;`` runs the next statement whatever happened; ``&&`` runs it only after a success.
    The script's status is the last command's, as with a shell."""
    outputs: list[str] = []
    reboot = False
    result = HostCommandResult(0, "")
    for statement in script.split(";"):
        for clause in statement.split("&&"):
            argv = shlex.split(clause)
            if not argv:
                continue
            try:
                result = _run_simple(host, argv)
            except HostCommandError as error:
                result = HostCommandResult(1, str(error))
            outputs.append(result.output)
            reboot = reboot or result.reboot
            if result.exit_code != 0:
                break
    return HostCommandResult(result.exit_code, "\n".join(filter(None, outputs)), reboot)


def _run_simple(host: HostFs, argv: list[str]) -> HostCommandResult:
    program = argv[0].rsplit("/", 1)[-1]
    words = (program, *argv[1:])
    if any(words[: len(r)] == r for r in _REBOOT_COMMANDS):
        return HostCommandResult(0, "rebooting", reboot=True)
    args = [a for a in argv[1:] if not a.startswith("-")]
    if program == "true":
        return HostCommandResult(0, "")
    if program == "rm":
        force = any(a.startswith("-") and "f" in a for a in argv[1:])
        for path in map(host.host_path, args):
            if not path.exists() and not force:
                raise HostCommandError(f"rm: {path.name}: no such file")
            path.unlink(missing_ok=True)
        return HostCommandResult(0, "")
    if program in ("mv", "cp") and len(args) == 2:
        source, target = map(host.host_path, args)
        if not source.exists():
            raise HostCommandError(f"{program}: {source.name}: no such file")
        if program == "mv":
            source.replace(target)
        else:
            target.write_bytes(source.read_bytes())
        return HostCommandResult(0, "")
    if program == "test" and argv[1:2] == ["-e"] and len(argv) == 3:
        return HostCommandResult(0 if host.host_path(argv[2]).exists() else 1, "")
    return HostCommandResult(127, f"{argv[0]}: command not emulated by the sandbox host")
