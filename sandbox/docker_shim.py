"""`docker` for a shared-kernel sandbox (`sandbox up --shared-kernel`), whose nodes play kind's
node containers: the commands the `docker` reboot strategy runs, answered from the simulator's
container records (`sandbox.simulator.containers`).

    docker restart [-t S] [-s SIG] NODE...  the simulator restarts each node's container; returns
                                            once it has started again, printing NODE as docker does
    docker inspect [-f FORMAT] NODE...      the container as JSON, or FORMAT with {{.Name}},
                                            {{.State.Running}} and {{.State.StartedAt}} filled in

`sandbox up --shared-kernel` writes ``STATE_DIR/bin/docker``, which runs `main` with its state dir:
put that directory first on PATH, or give the worker ``--docker STATE_DIR/bin/docker``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.simulator.containers import ContainerRecord, read_container, request_restart

# How long `restart` waits for the simulator (which looks for requests at least once a second).
RESTART_TIMEOUT_SECONDS = 60.0
_FIELD = re.compile(r"\{\{\s*((?:\.[A-Za-z]+)+)\s*\}\}")


def main(state_dir: Path, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="docker", description="the sandbox's node containers")
    commands = parser.add_subparsers(dest="command", required=True)
    restart = commands.add_parser("restart")
    # Accepted and ignored: a simulated container stops at once, whatever the signal.
    restart.add_argument("-t", "--timeout", "--time", type=int)
    restart.add_argument("-s", "--signal")
    restart.add_argument("containers", nargs="+")
    inspect = commands.add_parser("inspect")
    inspect.add_argument("-f", "--format")
    inspect.add_argument("containers", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "restart":
        return _restart(state_dir, args.containers)
    return _inspect(state_dir, args.containers, args.format)


def _restart(state_dir: Path, names: list[str]) -> int:
    status = 0
    for name in names:
        before = read_container(state_dir, name)
        if before is None:
            status = _no_such_container(name)
            continue
        request_restart(state_dir, name)
        deadline = time.monotonic() + RESTART_TIMEOUT_SECONDS
        while (now := read_container(state_dir, name)) is None or (
                now.startedAt == before.startedAt):
            if time.monotonic() > deadline:
                print(f"Error response from daemon: Cannot restart container {name}: the "
                      f"sandbox's node simulator did not restart it within "
                      f"{RESTART_TIMEOUT_SECONDS:.0f}s (is the sandbox running?)", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(name)
    return status


def _inspect(state_dir: Path, names: list[str], template: str | None) -> int:
    status = 0
    found: list[dict[str, Any]] = []
    for name in names:
        record = read_container(state_dir, name)
        if record is None:
            status = _no_such_container(name)
        else:
            found.append(_inspection(record))
    if template is None:
        print(json.dumps(found, indent=4))
        return status
    for container in found:
        try:
            print(_render(template, container))
        except KeyError as error:
            print(f"template: {template}: can't evaluate field {error.args[0]} "
                  "(the sandbox's docker knows Name, State.Running, State.StartedAt)",
                  file=sys.stderr)
            return 1
    return status


def _inspection(record: ContainerRecord) -> dict[str, Any]:
    return {"Name": f"/{record.name}", "State": {"Status": "running", "Running": True,
                                                 "StartedAt": record.startedAt}}


def _render(template: str, container: dict[str, Any]) -> str:
    return _FIELD.sub(lambda match: _field(container, match.group(1)), template)


def _field(container: dict[str, Any], path: str) -> str:
    value: Any = container
    for key in path.strip(".").split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(key)
        value = value[key]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _no_such_container(name: str) -> int:
    print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
    return 1
