"""`cilium-migrate`: the command line. Each command group lives in its own module; this one
only builds the parser, runs the chosen command and turns expected failures into one line."""

from __future__ import annotations

import argparse
import sys

from client import (
    demo_commands,
    dev_commands,
    exit_codes,
    fleet_commands,
    history_commands,
    migration_commands,
    plan_commands,
    sandbox_commands,
    status_commands,
    worker_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
