"""Garbage in every argument: the CLI answers with the documented exit code (client/exit_codes.py,
README "Exit codes") and an `error:` line on stderr, never a traceback. A hypothesis fuzz of
the same: tests/cli/test_cli_fuzz.py.

Most cases call `client.cli.main` in this process (an exception other than SystemExit escaping
it is the traceback a user would see), with the Temporal address pointing at a closed port;
the bytes an operator's shell passes reach it as Python makes them of non-UTF-8 argv
(surrogate escapes), and one subprocess run checks that path from real bytes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import exit_codes
from client.cli import main
from tests.cli.conftest import REPO, UNREACHABLE_ADDRESS, Migrations, cli_env
from tests.cli.conftest import Cli as ServerCli


@dataclass
class Outcome:
    code: int
    err: str


@pytest.fixture
def call(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
         ) -> Callable[..., Outcome]:
    """``call(*argv)`` runs the CLI in this process against an unreachable Temporal server."""
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_ADDRESS", UNREACHABLE_ADDRESS)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(REPO / ".no-temporal.toml"))
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exit:
            code = int(exit.code or 0)
        return Outcome(code, capsys.readouterr().err)
    return run


Call = Callable[..., Outcome]


def assert_refused(outcome: Outcome, code: int = exit_codes.INVALID_INPUT) -> None:
    assert outcome.code == code, outcome
    assert "Traceback" not in outcome.err
    assert "error: " in outcome.err, outcome


USAGE_ERRORS = [
    (),
    ("nope",),
    ("--bogus",),
    ("plan",),
    ("plan", "-f"),
    ("plan", "-f", "x.yaml", "-o", "xml"),
    ("schema", "extra"),
    ("approve",),
    ("approve", "a"),
    ("approve", "a", "b", "c"),
    ("decide", "a", "n", "maybe"),
    ("decide", "a", "n"),
    ("abort", "a", "--wait", "x"),
    ("status", "--nodes", ""),
    ("status", "--wave", "-1"),
    ("status", "--wave", "1e9"),
    ("status", "--wave", "9" * 5000),
    ("status", "--limit", "0"),
    ("status", "--interval", "x"),
    ("list", "-o", ""),
    ("history",),
    ("history", "export", "a"),
    ("replay",),
    ("worker", "--max-concurrent-activities", "x"),
    ("worker", "--log-level", "loud"),
    ("dev", "--port", "x"),
    ("sandbox",),
    ("sandbox", "up"),
    ("sandbox", "fault", "set", "n", "zzz"),
    ("demo", "--port", "x"),
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_exit_1_not_argparse_2(call: Call, argv: tuple[str, ...]) -> None:
    outcome = call(*argv)

    assert_refused(outcome)
    assert "usage: cilium-migrate" in outcome.err


NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what Python makes of argv bytes that are not UTF-8


@pytest.mark.parametrize("argv", [
    ("status", NOT_UTF8),
    ("abort", NOT_UTF8),
    ("approve", "a", NOT_UTF8),
    ("approve", "a", "g", "--as", NOT_UTF8),
    ("approve", "a", "g", "--reason", NOT_UTF8),
    ("approve", "a", "g", "--request-id", NOT_UTF8),
    ("decide", "a", NOT_UTF8, "retry"),
    ("list", "--namespace", NOT_UTF8),
    ("list", "--address", NOT_UTF8),
    ("list", "--api-key", NOT_UTF8),
    ("history", "export", "a", "-o", "-", "--run-id", NOT_UTF8),
    ("replay", "x.json", "--workflow-id", NOT_UTF8),
    ("sandbox", "up", "--nodes", "1", "--cluster-name", NOT_UTF8),
], ids=lambda argv: " ".join(argv).replace(NOT_UTF8, "<bytes>"))
def test_text_that_is_not_utf8_is_refused_by_name(call: Call, argv: tuple[str, ...]) -> None:
    outcome = call(*argv)

    assert_refused(outcome)
    assert "not valid UTF-8 text" in outcome.err


def test_a_file_name_that_is_not_utf8_is_still_a_file_name(call: Call, tmp_path: Path) -> None:
    history = tmp_path / f"run-{NOT_UTF8}.json"
    history.write_text("not json")

    outcome = call("replay", str(history))

    assert_refused(outcome)
    assert "is not JSON" in outcome.err


def test_raw_bytes_from_a_shell(tmp_path: Path) -> None:
    env = {**cli_env(UNREACHABLE_ADDRESS), "KUBECONFIG": "/nonexistent/kubeconfig"}
    done = subprocess.run([sys.executable, "-m", "client.cli", "approve", b"prod\xff", "wave-1"],
                          cwd=REPO, env=env, capture_output=True, timeout=60)

    assert done.returncode == exit_codes.INVALID_INPUT, done
    assert b"Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        b"cilium-migrate approve: error: argument cluster: not valid UTF-8 text: 'prod\\udcff'")


def test_a_replayed_file_name_that_is_not_utf8_prints_under_a_strict_utf8_stdout(
        tmp_path: Path) -> None:
    saved = REPO / "tests/histories/before-bounded-history__cilium-migrate__happy__node__cp-1.json"
    history = os.path.join(os.fsencode(tmp_path), b"run-\xff.json")
    with open(history, "wb") as copy:
        copy.write(saved.read_bytes())
    env = {**cli_env(UNREACHABLE_ADDRESS), "PYTHONIOENCODING": "utf-8"}  # an en_US.UTF-8 locale

    done = subprocess.run([sys.executable, "-m", "client.cli", "replay", history], cwd=REPO,
                          env=env, capture_output=True, timeout=120)

    assert done.returncode == exit_codes.OK, done
    assert done.stdout.endswith(b"run-\\udcff.json: replays cleanly "
                                b"(cilium-migrate/happy/node/cp-1)\n")


@pytest.mark.parametrize("address", ["::::", "host:99999999", "127.0.0.1:-1", "exa mple:7233"])
def test_an_address_that_is_no_address_is_bad_input(call: Call, address: str) -> None:
    outcome = call("list", "--address", address)

    assert_refused(outcome)
    assert f"error: invalid Temporal address {address!r}: invalid target URL" in outcome.err


def test_bytes_in_the_environment_are_bad_input(call: Call,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", NOT_UTF8)

    assert_refused(call("list"))


def test_a_closed_port_is_unreachable(call: Call) -> None:
    assert_refused(call("status", "prod"), exit_codes.UNREACHABLE)


def test_an_approval_by_nobody_is_bad_input(call: Call) -> None:
    outcome = call("approve", "prod", "wave-1", "--as", "")

    assert_refused(outcome)
    assert outcome.err == "error: --as: String should have at least 1 character\n"


@pytest.mark.parametrize("address", ["garbage", "127.0.0.1:99999999", "in-use"])
def test_a_metrics_address_the_worker_cannot_serve_is_bad_input(call: Call,
                                                                address: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if address == "in-use":
            address = f"127.0.0.1:{taken.getsockname()[1]}"
        outcome = call("worker", "--metrics-address", address)

    assert_refused(outcome)
    assert f"error: --metrics-address {address}: " in outcome.err


@pytest.mark.parametrize("argv", [
    ("status", "prod", "--watch", "--interval", "-5"),
    ("status", "prod", "--watch", "--interval", "nan"),
    ("status", "prod", "--watch", "--interval", "inf"),
    ("status", "prod", "--watch", "--interval", "0"),
    ("worker", "--max-concurrent-activities", "-1"),
    ("dev", "--port", "-1"),
    ("dev", "--port", "99999999"),
    ("dev", "--ui-port", "-3"),
    ("demo", "--workers", "-3"),
    ("demo", "--workers", "0"),
    ("demo", "--port", "70000"),
    ("sandbox", "up", "--nodes", "1", "--reboot-seconds", "-1"),
    ("sandbox", "up", "--nodes", "1", "--reboot-seconds", "nan"),
], ids=" ".join)
def test_numbers_out_of_range_are_usage_errors_before_anything_starts(
        call: Call, argv: tuple[str, ...]) -> None:
    outcome = call(*argv)

    assert_refused(outcome)
    assert "usage: cilium-migrate" in outcome.err


def test_a_dev_port_without_room_for_the_web_ui_names_the_way_out(call: Call) -> None:
    outcome = call("dev", "--port", "65000")

    assert_refused(outcome)
    assert outcome.err == ("error: the Web UI's port would be 66000; pass --ui-port or "
                           "--headless\n")


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def test_dev_refuses_state_it_cannot_keep_and_an_address_it_cannot_bind(
        call: Call, tmp_path: Path) -> None:
    dev = ("dev", "--headless", "--port", free_port())

    not_creatable = call(*dev, "--db-file", "/proc/no-such-process/temporal.db")
    a_directory = call(*dev, "--db-file", str(tmp_path))
    unresolvable = call(*dev, "--ip", "no-such-host.invalid")

    assert_refused(not_creatable)
    assert "error: --db-file /proc/no-such-process/temporal.db: cannot write beside it" in (
        not_creatable.err)
    assert_refused(a_directory)
    assert f"error: --db-file {tmp_path} is a directory" in a_directory.err
    assert_refused(unresolvable)
    assert "error: --ip no-such-host.invalid: " in unresolvable.err


@pytest.mark.parametrize("which", [(), ("--fleet",)], ids=["cluster", "fleet"])
def test_demo_refuses_a_state_directory_that_is_a_file(call: Call, tmp_path: Path,
                                                       which: tuple[str, ...]) -> None:
    a_file = tmp_path / "state"
    a_file.write_text("")

    outcome = call("demo", *which, "--dir", str(a_file), "--no-wait")

    assert_refused(outcome)
    assert f"error: --dir {a_file}: File exists" in outcome.err


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """Files that are not what a command asks for."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00cluster: \x80\x81\n" + bytes(range(256)))
    locked = tmp_path / "locked.yaml"
    locked.write_text("cluster: {name: a}\n")
    locked.chmod(0)
    return {"missing": tmp_path / "missing.yaml", "directory": tmp_path, "binary": binary,
            # Root reads a mode-000 file; this one fails to read for anyone (EIO).
            "unreadable": Path("/proc/self/mem"),
            "locked": locked}


@pytest.mark.parametrize("kind", ["missing", "directory", "binary", "unreadable", "locked"])
@pytest.mark.parametrize("command", [("plan", "-f"), ("start", "-f"), ("replay",),
                                     ("history", "replay"), ("list", "--tls-ca-path"),
                                     ("list", "--tls-cert-path")])
def test_files_that_are_missing_directories_binary_or_unreadable(
        call: Call, bad_files: dict[str, Path], command: tuple[str, ...], kind: str) -> None:
    if kind == "locked" and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000")
    outcome = call(*command, str(bad_files[kind]))

    assert_refused(outcome)
    if kind != "binary":
        assert str(bad_files[kind]) in outcome.err


@pytest.mark.parametrize("state", [b"{not json", b'{"a": 1}', bytes(range(256)), b"[]"])
@pytest.mark.parametrize("command", ["status", "down"])
def test_a_damaged_sandbox_state_file_is_named_not_a_traceback(
        call: Call, tmp_path: Path, command: str, state: bytes) -> None:
    (tmp_path / "state.json").write_bytes(state)

    outcome = call("sandbox", command, "--state-dir", str(tmp_path))

    assert_refused(outcome)
    assert f"{tmp_path / 'state.json'}" in outcome.err
    assert "if that sandbox still runs, stop its processes by hand" in outcome.err


def test_a_fault_that_cannot_be_written_is_named(call: Call) -> None:
    outcome = call("sandbox", "fault", "set", "worker-1", "probe-fails", "--state-dir",
                   "/proc/no-such-process")

    assert_refused(outcome)
    assert outcome.err == ("error: cannot write /proc/no-such-process/faults.yaml: No such file "
                           "or directory\n")


# --- garbage that reaches the server ---------------------------------------------------------


async def test_garbage_the_server_refuses(cli: ServerCli, migrations: Migrations,
                                          tmp_path: Path) -> None:
    name = migrations.name()
    await cli("start", "-f", str(migrations.spec(name, approvals={"policy": "per-wave"})))
    await migrations.until(name, lambda p: p.pending_gates, "a gate")

    results = await asyncio.gather(
        cli("status", "no-such-cluster"),
        cli("status", name, "--namespace", "no-such-namespace"),
        cli("approve", name, "install", "--request-id", "x" * 100_000),
        cli("history", "export", name, "-o", "-", "--run-id", "not-a-run-id"),
        cli("history", "export", name, "-o", str(tmp_path)),
        cli("history", "export", name, "-o", str(tmp_path / "missing" / "h.json")),
        cli("start", "-f", str(migrations.spec(migrations.name())), "--task-queue", ""),
        cli("decide", name, "no-such-node", "retry"),
        cli("status", name, "--wave", "1", "--offset", str(10**30), "--limit", str(10**30)))

    expected = [exit_codes.NOT_FOUND] * 2 + [exit_codes.INVALID_INPUT] * 5 + [exit_codes.BLOCKED]
    assert [result.code for result in results[:-1]] == expected, results
    huge_page = results[-1]
    assert huge_page.code == exit_codes.OK and "Traceback" not in huge_page.err, huge_page
    for result in results[:-1]:
        assert "Traceback" not in result.err, result
        assert result.err.splitlines()[-1].startswith("error: "), result
