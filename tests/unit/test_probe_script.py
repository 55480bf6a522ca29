"""The probe script itself, run by a POSIX shell with stand-ins for busybox's wget and ping that
print what busybox 1.37 prints (networking/wget.c: `-S` echoes each status line indented by two
spaces; an error status dies with "server returned error: <status line>"; messages go to
stderr prefixed "wget: "). What the script writes must be a `ProbeReport` the activity reads
as the script meant it: an HTTP answer of any status, or no answer with wget's reasons.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from activities.verify import PROBE_SCRIPT, read_report
from plan.contract import ProbeReport
from sandbox.simulator import busybox
from tests.unit.test_activities_verify import request

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")

PEERS = ("10.244.2.7", "10.245.3.9")


def run_script(tmp_path: Path, wget_stderr: str, wget_exit: int,
               replying: tuple[str, ...] = PEERS) -> tuple[int, str]:
    """Runs the script; returns its exit code and the report it wrote."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    (tmp_path / "wget-says").write_text(wget_stderr)
    stubs = {
        "wget": f'cat "{tmp_path}/wget-says" >&2\nexit {wget_exit}\n',
        # ping answers for the addresses in $REPLYING only.
        "ping": 'for a in "$@"; do last=$a; done\n'
                'case ",$REPLYING," in *",$last,"*) exit 0;; esac\nexit 1\n',
    }
    for name, body in stubs.items():
        (tools / name).write_text("#!/bin/sh\n" + body)
        (tools / name).chmod(0o755)
    report = tmp_path / "report"
    report.unlink(missing_ok=True)
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
           "KUBERNETES_SERVICE_PORT": "443", "POD_IP": "10.245.0.5", "NODE_NAME": "node-1",
           "PROBE_PEERS": ",".join(PEERS), "REPLYING": ",".join(replying),
           "PROBE_REPORT": str(report)}
    done = subprocess.run(["sh", "-c", PROBE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert report.exists(), done.stderr
    return done.returncode, report.read_text()


def test_a_healthy_answer_is_reported_with_its_status(tmp_path: Path) -> None:
    code, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n  Content-Type: text/plain\n", 0)
    report = ProbeReport.model_validate_json(text)
    assert (report.api_server.status, report.api_server.error) == (200, "")
    assert report.peers == dict.fromkeys(PEERS, True)
    assert (report.pod_ip, report.node, code) == ("10.245.0.5", "node-1", 0)


def test_a_401_is_an_answer_though_wget_exits_1(tmp_path: Path) -> None:
    said = ("  HTTP/1.1 401 Unauthorized\n  Content-Type: application/json\n"
            "wget: server returned error: HTTP/1.1 401 Unauthorized\n")
    code, text = run_script(tmp_path, said, 1)
    assert ProbeReport.model_validate_json(text).api_server.status == 401
    assert code == 0
    # Without -S's echo the error line alone carries the status.
    _, text = run_script(tmp_path, "wget: server returned error: HTTP/1.1 403 Forbidden\n", 1)
    assert ProbeReport.model_validate_json(text).api_server.status == 403


def test_a_failed_handshake_is_no_answer_and_keeps_wgets_words(tmp_path: Path) -> None:
    """busybox 1.36 against a Go TLS server."""
    said = ("wget: TLS error from peer (alert code 40): handshake failure\n"
            "wget: error getting response: Connection reset by peer\n")
    code, text = run_script(tmp_path, said, 1)
    report = ProbeReport.model_validate_json(text)
    assert report.api_server.status is None
    assert report.api_server.error == (
        "wget: TLS error from peer (alert code 40): handshake failure; "
        "wget: error getting response: Connection reset by peer")
    assert code == 1
    read = read_report(request(), {}, _ended(text), None)
    assert (read.api_status, read.api_error, read.problem) == (None, report.api_server.error, "")


def test_whatever_wget_says_the_report_stays_json(tmp_path: Path) -> None:
    said = 'wget: bad address \'a"b\\c\'\n\tcontrol\x07 chars\n' + "x" * 400 + "\n"
    _, text = run_script(tmp_path, said, 1)
    error = ProbeReport.model_validate_json(text).api_server.error
    assert error.startswith("wget: bad address 'abc'; control chars; xxx")
    assert len(error) == 300


def test_nothing_said_is_still_a_reason(tmp_path: Path) -> None:
    _, text = run_script(tmp_path, "", 1)
    assert ProbeReport.model_validate_json(text).api_server.error == "wget printed nothing"


def test_a_silent_peer_fails_the_script(tmp_path: Path) -> None:
    code, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0, replying=PEERS[:1])
    assert ProbeReport.model_validate_json(text).peers == {PEERS[0]: True, PEERS[1]: False}
    assert code == 1


def _ended(message: str) -> dict[str, object]:
    return {"status": {"phase": "Failed", "podIP": "10.245.0.5", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 1, "message": message}}}]}}


def test_the_sandbox_reports_wgets_words_as_the_script_does(tmp_path: Path) -> None:
    """The simulated probe formats wget's messages itself; it must match the script."""
    for said in (busybox.TLS_FAILURE, busybox.NO_REPLY):
        _, text = run_script(tmp_path, "\n".join(said) + "\n", 1)
        assert ProbeReport.model_validate_json(text).api_server.error == busybox.as_reported(said)
