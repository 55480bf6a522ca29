"""The probe script itself, run by a POSIX shell with stand-ins for busybox's wget and nslookup
that print what busybox 1.37 prints (networking/wget.c: `-S` echoes each status line indented by
two spaces; an error status dies with "server returned error: <status line>"; messages go to
stderr prefixed "wget: "; networking/nslookup.c: the server's lines, then "Name:" and
"Address:" per answer, or "** server can't find NAME: NXDOMAIN"). What the script writes must be
a `ProbeReport` the activity reads as the script meant it: an HTTP answer of any status, or no
answer with wget's reasons; the addresses a name resolved to, trying the search domains.
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
SEARCH = "search default.svc.cluster.local svc.cluster.local cluster.local"
SERVER = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"


def answer(name: str, *addresses: str) -> str:
    return SERVER + "".join(f"Name:\t{name}\nAddress: {a}\n" for a in addresses) + "\n"


def not_found(name: str) -> str:
    return SERVER + f"** server can't find {name}: NXDOMAIN\n\n"


# The name the probe asks for is resolved by the cluster's DNS through the search list.
RESOLVES = {"kubernetes.default.svc.cluster.local":
            answer("kubernetes.default.svc.cluster.local", "10.96.0.1")}


def run_script(tmp_path: Path, wget_stderr: str, wget_exit: int,
               replying: tuple[str, ...] = PEERS, dns: dict[str, str] | None = None,
               resolv_conf: str = SEARCH) -> tuple[int, str]:
    """Runs the script; returns its exit code and the report it wrote. ``dns`` maps the names
    nslookup is asked for to what it prints (exit 0); other names print NXDOMAIN (exit 1)."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    (tmp_path / "wget-says").write_text(wget_stderr)
    answers = tmp_path / "dns"
    answers.mkdir(exist_ok=True)
    for old in answers.iterdir():
        old.unlink()
    for name, said in (RESOLVES if dns is None else dns).items():
        (answers / name).write_text(said)
    (tmp_path / "resolv.conf").write_text(resolv_conf + "\n")
    (tmp_path / "server").write_text(SERVER)
    stubs = {
        # The API server's answer; a peer's /hostname answers for the addresses in $REPLYING.
        "wget": 'for a in "$@"; do last=$a; done\n'
                'case "$last" in http://*/hostname)\n'
                '  peer=${last#http://}; peer=${peer%%:*}\n'
                '  case ",$REPLYING," in *",$peer,"*) exit 0;; esac\n'
                '  echo "wget: download timed out" >&2; exit 1;;\nesac\n'
                f'cat "{tmp_path}/wget-says" >&2\nexit {wget_exit}\n',
        "nslookup": f'if [ -f "{answers}/$1" ]; then cat "{answers}/$1"; exit 0; fi\n'
                    f'if [ -f "{answers}/silent" ]; then cat "{answers}/silent"; exit 1; fi\n'
                    f'cat "{tmp_path}/server"\n'
                    'echo "** server can\'t find $1: NXDOMAIN"; echo; exit 1\n',
    }
    for name, body in stubs.items():
        (tools / name).write_text("#!/bin/sh\n" + body)
        (tools / name).chmod(0o755)
    report = tmp_path / "report"
    report.unlink(missing_ok=True)
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
           "KUBERNETES_SERVICE_PORT": "443", "POD_IP": "10.245.0.5", "NODE_NAME": "node-1",
           "PROBE_PEERS": ",".join(PEERS), "REPLYING": ",".join(replying),
           "PROBE_REPORT": str(report), "PROBE_DNS_NAME": "kubernetes.default"}
    # The pod's resolv.conf is the kubelet's; here the script reads the test's.
    script = PROBE_SCRIPT.replace("/etc/resolv.conf", str(tmp_path / "resolv.conf"))
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
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


def test_the_name_resolves_through_the_first_search_domain_that_has_it(tmp_path: Path) -> None:
    code, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0)
    dns = ProbeReport.model_validate_json(text).dns
    assert dns is not None
    assert (dns.name, dns.addresses, dns.error) == (
        "kubernetes.default.svc.cluster.local", ["10.96.0.1"], "")
    assert code == 0
    # Asked as given first: a resolver that answers the short name is taken at its word.
    _, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0, dns={
        "kubernetes.default": answer("kubernetes.default", "10.96.0.1", "10.96.0.2")})
    dns = ProbeReport.model_validate_json(text).dns
    assert dns is not None and (dns.name, dns.addresses) == (
        "kubernetes.default", ["10.96.0.1", "10.96.0.2"])


def test_a_name_no_domain_resolves_fails_with_nslookups_words(tmp_path: Path) -> None:
    code, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0, dns={})
    dns = ProbeReport.model_validate_json(text).dns
    assert dns is not None and dns.addresses == []
    # The last name tried, and what nslookup said of it.
    assert dns.name == "kubernetes.default"
    # The server's header left out, cleaned as wget's words are.
    assert dns.error == "** server can't find kubernetes.default.cluster.local: NXDOMAIN"
    assert code == 1


def test_a_silent_server_ends_the_lookup_at_once(tmp_path: Path) -> None:
    """No server answered: trying more names would only wait longer for the same silence."""
    silence = ";; connection timed out; no servers could be reached\n"
    code, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0, dns={"silent": silence})
    dns = ProbeReport.model_validate_json(text).dns
    assert dns is not None and dns.addresses == []
    assert dns.error == ";; connection timed out; no servers could be reached"
    assert code == 1


def test_the_sandbox_reports_nslookups_words_as_the_script_does(tmp_path: Path) -> None:
    """The simulated probe formats nslookup's lines itself; it must match the script."""
    for said in (busybox.NSLOOKUP_NO_SERVER,
                 busybox.nslookup_not_found("kubernetes.default.cluster.local")):
        _, text = run_script(tmp_path, "  HTTP/1.1 200 OK\n", 0,
                             dns={"silent": SERVER + "\n".join(said) + "\n"})
        dns = ProbeReport.model_validate_json(text).dns
        assert dns is not None and dns.error == busybox.nslookup_error(said)
