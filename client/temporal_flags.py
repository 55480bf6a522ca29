"""Which Temporal server a command talks to, and the one way every command connects to it.

The flags and environment variables are the Temporal CLI's own (`temporal options`), resolved in
its order: flag, then environment, then the profile in its config file (`temporal config set`),
then the defaults. So an operator who already uses `temporal` needs no new configuration.

Each connection also names itself (`--identity`): Temporal records that identity with the
requests it takes, e.g. in the accepted event of an approval, where `status` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import getpass
import os
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from client import exit_codes
from client.errors import CommandError
from worker.build import connect
from worker.metrics import start_tracing

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
CONNECT_TIMEOUT = 10.0
IDENTITY_ENV = "CILIUM_MIGRATE_IDENTITY"


def add_temporal_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Temporal connection",
        "flag > environment variable > profile in the Temporal CLI config file > default")
    group.add_argument("--address", help="frontend host:port (env TEMPORAL_ADDRESS; "
                       f"default {DEFAULT_ADDRESS})")
    group.add_argument("--namespace", help="Temporal namespace (env TEMPORAL_NAMESPACE; "
                       f"default {DEFAULT_NAMESPACE})")
    group.add_argument("--api-key", help="API key, implies TLS (env TEMPORAL_API_KEY)")
    group.add_argument("--tls", action="store_true", default=None,
                       help="use TLS with the system's roots (env TEMPORAL_TLS)")
    group.add_argument("--tls-cert-path", help="client certificate (env "
                       "TEMPORAL_TLS_CLIENT_CERT_PATH)")
    group.add_argument("--tls-key-path", help="client private key (env "
                       "TEMPORAL_TLS_CLIENT_KEY_PATH)")
    group.add_argument("--tls-ca-path", help="server CA certificate (env "
                       "TEMPORAL_TLS_SERVER_CA_CERT_PATH)")
    group.add_argument("--tls-server-name", help="override the TLS server name (env "
                       "TEMPORAL_TLS_SERVER_NAME)")
    group.add_argument("--profile", help="profile of the Temporal CLI config file "
                       "(env TEMPORAL_PROFILE; default: default)")
    group.add_argument("--identity", help="how this client names itself to Temporal, which "
                       "records it with each request (e.g. beside an approval); self-declared, "
                       f"like --as (env {IDENTITY_ENV}; default: USER@HOST cilium-migrate)")


@dataclass(frozen=True)
class TemporalTarget:
    address: str
    namespace: str
    api_key: str | None = None
    tls: bool | TLSConfig = False
    identity: str | None = None  # None: the SDK's own (pid@host)

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"tls": self.tls}
        if self.api_key:
            options["api_key"] = self.api_key
        if self.identity:
            options["identity"] = self.identity
        return options


def resolve_target(args: argparse.Namespace) -> TemporalTarget:
    profile = _load_profile(getattr(args, "profile", None))
    tls_profile = profile.tls
    address = args.address or profile.address or DEFAULT_ADDRESS
    namespace = args.namespace or profile.namespace or DEFAULT_NAMESPACE
    api_key = args.api_key or profile.api_key
    paths = {"client_cert": args.tls_cert_path, "client_private_key": args.tls_key_path,
             "server_root_ca_cert": args.tls_ca_path}
    tls: bool | TLSConfig = bool(args.tls or api_key)
    if any(paths.values()) or args.tls_server_name:
        from_profile = _profile_tls(tls_profile) if tls_profile else None
        base = from_profile if isinstance(from_profile, TLSConfig) else TLSConfig()
        tls = TLSConfig(
            domain=args.tls_server_name or base.domain,
            client_cert=_read(paths["client_cert"], "client certificate") or base.client_cert,
            client_private_key=(_read(paths["client_private_key"], "client key")
                                or base.client_private_key),
            server_root_ca_cert=(_read(paths["server_root_ca_cert"], "CA certificate")
                                 or base.server_root_ca_cert))
    elif tls_profile is not None and not args.tls:
        tls = _profile_tls(tls_profile)
    identity = (getattr(args, "identity", None) or os.environ.get(IDENTITY_ENV)
                or default_identity())
    return TemporalTarget(address, namespace, api_key, tls, identity)


def default_identity() -> str:
    """Who runs this command, where: the SDK's default (pid@host) names no person."""
    return f"{login_name()}@{socket.gethostname()} cilium-migrate"


def login_name() -> str:
    if os.environ.get("USER"):
        return os.environ["USER"]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def connection_flags(args: argparse.Namespace) -> str:
    """The connection flags the user typed, to repeat in the commands we suggest."""
    flags = [f"--{name.replace('_', '-')} {value}" for name in ("address", "namespace", "profile")
             if (value := getattr(args, name, None))]
    return "".join(f" {flag}" for flag in flags)


async def open_client(args: argparse.Namespace, runtime: Runtime | None = None) -> Client:
    return await open_client_at(resolve_target(args), runtime)


async def open_client_at(target: TemporalTarget, runtime: Runtime | None = None) -> Client:
    extra: dict[str, Any] = {"runtime": runtime} if runtime else {}
    try:
        return await asyncio.wait_for(
            connect(target.address, target.namespace, **target.connect_options(), **extra),
            CONNECT_TIMEOUT)
    except (TimeoutError, RuntimeError, RPCError, OSError) as error:
        raise unreachable(target.address, error) from None
    except ValueError as error:  # the SDK's parse of the address: "invalid port number", ...
        raise CommandError(f"invalid Temporal address {target.address!r}: {_reason(error)} "
                           "(expected HOST:PORT)", exit_codes.INVALID_INPUT) from None


def unreachable(address: str, error: BaseException) -> CommandError:
    reason = _reason(error)
    return CommandError(f"cannot reach Temporal at {address}" + (f": {reason}" if reason else ""),
                        exit_codes.UNREACHABLE)


def run(args: argparse.Namespace, command: Coroutine[Any, Any, int]) -> int:
    """Runs one command's coroutine, turns Temporal's failures into one-line errors, and makes
    the process exit explicitly once `cli.main` is done with the result (see `_exit_at_end`)."""
    code = exit_codes.INVALID_INPUT  # what an unexpected exception ends with
    flush_traces = start_tracing()
    try:
        # The root span: the workflow's spans (through the client's tracing interceptor) join
        # this command's trace.
        with trace.get_tracer(__name__).start_as_current_span(f"cilium-migrate {_name(args)}"):
            code = _run(args, command)
    except CommandError as error:
        code = error.exit_code
        raise
    except KeyboardInterrupt:
        code = 130
        raise
    finally:
        flush_traces()
        _exit_at_end(code)
    return code


def _name(args: argparse.Namespace) -> str:
    """The command as typed, without its arguments: `start`, `history export`."""
    return " ".join(str(part) for part in (getattr(args, "group", None),
                                             getattr(args, "command", None)) if part)


def _run(args: argparse.Namespace, command: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(command)
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except RPCError as error:
        address = getattr(args, "address", None) or resolve_target(args).address
        if error.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise unreachable(address, error) from None
        if error.status in (RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise CommandError(f"Temporal at {address} refused the credentials: {error.message}",
                               exit_codes.UNREACHABLE) from None
        if error.status is RPCStatusCode.NOT_FOUND:
            raise CommandError(error.message, exit_codes.NOT_FOUND) from None
        raise CommandError(f"Temporal: {error.message}", exit_codes.INVALID_INPUT) from None


def _exit_at_end(code: int) -> None:
    """sdk-python#300: the SDK's native threads can abort the interpreter while it finalizes
    (seen here as "Fatal Python error: PyGILState_Release" and exit 134 after a successful
    command). When this process is the CLI, end it at exit time, after `cli.main` printed its
    result, with a flush and `os._exit`, before finalization starts. Callers that import the
    CLI (tests calling `main`) are left alone."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) != "client.cli" and Path(sys.argv[0]).name != "cilium-migrate":
        return

    def exit_now() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    atexit.register(exit_now)


def _load_profile(name: str | None) -> Any:
    from temporalio.envconfig import ClientConfigProfile

    try:
        return ClientConfigProfile.load(name)
    except Exception as error:  # noqa: BLE001 - the bridge raises its own ConfigError type
        raise CommandError(f"Temporal config profile: {error}", exit_codes.INVALID_INPUT) from None


def _profile_tls(profile_tls: Any) -> bool | TLSConfig:
    try:
        config: bool | TLSConfig = profile_tls.to_connect_tls_config()
    except OSError as error:
        raise CommandError(f"cannot read a TLS file of the Temporal profile: {error}",
                           exit_codes.INVALID_INPUT) from None
    return config


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {what} {path}: {error.strerror}",
                           exit_codes.INVALID_INPUT) from None
    # The SDK parses these only while connecting, and reports a bad one as a failed
    # connection: "cannot reach Temporal" (exit 3) for what is a wrong file.
    if b"-----BEGIN " not in data:
        raise CommandError(f"{what} {path} is not PEM (no -----BEGIN line)",
                           exit_codes.INVALID_INPUT)
    return data


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:.0f}s"
    text = str(error)
    for marker, reason in (
            ("Connection refused", "connection refused"),
            ("dns error", "unknown host"),
            ("InvalidContentType", "TLS handshake failed (a plain-text server? drop --tls)"),
            ("certificate", "TLS certificate rejected"),
            ("grpc-status header missing", "not a Temporal gRPC endpoint"),
            ("timed out", "timed out")):
        if marker.lower() in text.lower():
            return reason
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:200]
