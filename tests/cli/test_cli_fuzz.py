"""Any argv of the client commands, generated from the parser's own flags and choices with
garbage among them, ends in a documented exit code with an `error:` line, never a traceback.
The named cases are in tests/cli/test_cli_bad_input.py."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import exit_codes
from client.cli import build_parser, main
from tests.cli.conftest import REPO, UNREACHABLE_ADDRESS

NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what Python makes of argv bytes that are not UTF-8


# Commands with effects on this machine (dev and demo start servers, sandbox writes its state
# dir, worker configures the process's logging) have their cases in test_cli_bad_input.py;
# these only read files and talk to Temporal.
FUZZED_COMMANDS = [("plan",), ("schema",), ("start",), ("approve",), ("pause",), ("resume",),
                   ("decide",), ("abort",), ("status",), ("list",), ("history", "export"),
                   ("history", "replay"), ("replay",)]
DOCUMENTED_CODES = {exit_codes.OK, exit_codes.INVALID_INPUT, exit_codes.BLOCKED,
                    exit_codes.UNREACHABLE, exit_codes.NOT_FOUND}


def command_parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for word in words:
        [subcommands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subcommands.choices[word]
    return parser


FUZZ_DIR = Path(tempfile.mkdtemp(prefix="cli-fuzz-"))
(FUZZ_DIR / "spec.yaml").write_text("cluster: {name: fuzz}\n")
(FUZZ_DIR / "binary").write_bytes(bytes(range(256)))
FILES = [str(FUZZ_DIR / "spec.yaml"), str(FUZZ_DIR / "binary"), str(FUZZ_DIR / "missing"),
         str(FUZZ_DIR), "/proc/self/mem", "-"]
values = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), max_size=30),  # argv holds no NUL
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e9", "0x10", "9" * 5000, "",
                     NOT_UTF8, f"prod{NOT_UTF8}", "::::", "127.0.0.1:99999"]),
    st.sampled_from(FILES))


def value_for(action: argparse.Action) -> st.SearchStrategy[str]:
    """Anything, or often one of the action's own choices, so that parsing gets past it."""
    if action.choices:
        return st.sampled_from(sorted(map(str, action.choices))) | values
    return values


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """A command with its positionals given (mostly), some of its flags with values, and now
    and then a stray token."""
    words = draw(st.sampled_from(FUZZED_COMMANDS))
    actions = [a for a in command_parser(words)._actions if a.dest != "help"]
    argv = list(words)
    for action in actions:
        if not action.option_strings and draw(st.integers(0, 9)):
            argv.append(draw(value_for(action)))
    for action in draw(st.lists(st.sampled_from([a for a in actions if a.option_strings]),
                                max_size=4)):
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            argv.append(draw(value_for(action)))
    if not draw(st.integers(0, 4)):
        argv.insert(draw(st.integers(len(words), len(argv))), draw(values))
    return argv


@settings(derandomize=True, max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(argvs())
def test_fuzz_arguments_end_in_a_documented_exit_code(argv: list[str]) -> None:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("TEMPORAL_")}
    environment.update(TEMPORAL_ADDRESS=UNREACHABLE_ADDRESS, KUBECONFIG="/nonexistent/config",
                       TEMPORAL_CONFIG_FILE=str(REPO / ".no-temporal.toml"))
    err = io.StringIO()
    with mock.patch.dict(os.environ, environment, clear=True), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = int(exit.code or 0)

    assert code in DOCUMENTED_CODES, (code, err.getvalue())
    assert code == exit_codes.OK or "error: " in err.getvalue(), err.getvalue()
