"""`cilium-migrate`: the command line. Each command group lives in its own module; this one
only builds the parser, runs the chosen command and turns expected failures into one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from client import (
    demo_commands,
    dev_commands,
    exit_codes,
    fleet_commands,
    history_commands,
    migration_commands,
    plan_commands,
    rehearse_commands,
    sandbox_commands,
    status_commands,
    worker_commands,
)

# Options whose value is a file or program name: the OS takes any bytes there. Every other
# value is text that Temporal or Kubernetes receives, and they take UTF-8 only.
FILE_NAME_OPTIONS = frozenset({"kubeconfig", "cluster_kubeconfig", "tls_cert_path",
                               "tls_key_path", "tls_ca_path", "helm", "docker"})


class CommandLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error exits 1 (bad input) instead of argparse's 2, which
    scripts read as "refused" (client/exit_codes.py), and that text arguments must be UTF-8.
    Subcommand parsers are of this class too: add_subparsers makes them with the parent's."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        # Python hands argv bytes that are not UTF-8 over as lone surrogates; sent on, they
        # would fail deep inside gRPC or pydantic with a traceback.
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.dest not in FILE_NAME_OPTIONS and not _utf8(value):
                flag = "/".join(action.option_strings) or action.dest
                self.error(f"argument {flag}: not valid UTF-8 text: {value!r}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(exit_codes.INVALID_INPUT, f"{self.prog}: error: {message}\n")


def _utf8(value: object) -> bool:
    if isinstance(value, list):
        return all(_utf8(item) for item in value)
    if not isinstance(value, str):
        return True  # numbers, flags, and Path values (file names)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="cilium-migrate",
        description="Zero-downtime Flannel to Cilium migration as a durable Temporal workflow.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    plan_commands.register(groups)
    sandbox_commands.register(groups)
    migration_commands.register(groups)
    fleet_commands.register(groups)
    status_commands.register(groups)
    history_commands.register(groups)
    worker_commands.register(groups)
    dev_commands.register(groups)
    demo_commands.register(groups)
    rehearse_commands.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    _print_any_file_name()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as error:  # noqa: BLE001 - every expected failure is one clear line
        known = getattr(error, "exit_code", None)
        if known is None and not isinstance(error, sandbox_commands.EXPECTED_ERRORS):
            raise
        print(f"error: {error}", file=sys.stderr)
        code = known if known is not None else exit_codes.INVALID_INPUT
    sys.stdout.flush()
    return code


def _print_any_file_name() -> None:
    """A file name need not be UTF-8, and we print the ones we are given. Under a UTF-8 locale
    (or PYTHONIOENCODING=utf-8) Python's stdout refuses such a name with UnicodeEncodeError;
    print it escaped instead, as stderr already does."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
