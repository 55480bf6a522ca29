"""The real-network mode's tools: what `find_network_tools` says is missing, the busybox applet
links, and the built binaries themselves (flanneld, the CNI plugins, agnhost, busybox running
the product's probe script). Tests of built binaries use what `make toolchain` put in the cache
and skip, saying why, on a machine that cannot run the real network mode or has not built them.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from activities.verify import PROBE_SCRIPT
from client import sandbox_commands
from client.cli import main
from plan.contract import ProbeReport
from sandbox import nettools
from sandbox.cilium_release import CiliumRelease
from sandbox.nettools import (
    APPLETS,
    CNI_PLUGINS,
    NetworkTools,
    find_network_tools,
    real_network_unsupported,
)
from sandbox.pki import CertificateAuthority
from sandbox.toolchain import Toolchain, ToolchainError


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding stand-ins for every tool, on a host that has iptables."""
    monkeypatch.setenv("CILIUM_MIGRATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nettools, "host_command", lambda name: Path(f"/usr/sbin/{name}"))
    stand_ins = [nettools.flanneld_path(), nettools.agnhost_path(), nettools.coredns_path(),
                 *(nettools.cni_bin_dir() / p for p in CNI_PLUGINS)]
    for path in stand_ins:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    busybox = nettools.busybox_path()
    busybox.parent.mkdir(parents=True)
    # Enough of busybox for linking: `--list` names its applets.
    busybox.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(f"'{a}'" for a in APPLETS) + "\n")
    busybox.chmod(0o755)
    nettools._link_applets(busybox)
    return tmp_path / "cache"


def test_a_full_cache_is_found(fake_cache: Path) -> None:
    tools = find_network_tools()
    assert tools.cni_bin == nettools.cni_bin_dir()
    assert tools.iptables == Path("/usr/sbin/iptables")
    assert os.readlink(tools.applets / "wget") == str(tools.busybox)


def test_find_names_each_missing_piece_and_the_command(fake_cache: Path) -> None:
    (nettools.cni_bin_dir() / "portmap").unlink()
    nettools.agnhost_path().unlink()
    nettools.coredns_path().unlink()
    with pytest.raises(ToolchainError) as raised:
        find_network_tools()
    message = str(raised.value)
    assert "CNI plugins (portmap)" in message
    assert "agnhost v1.35.4" in message and "CoreDNS v1.15.0" in message
    assert "flanneld" not in message and "iptables" not in message
    assert "cilium-migrate sandbox build" in message


def test_a_missing_host_package_is_named_with_the_apt_get_line(
        fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nettools, "host_command", lambda name: None)
    with pytest.raises(ToolchainError) as raised:
        find_network_tools()
    message = str(raised.value)
    assert "not installed: iptables" in message
    assert "apt-get install --no-install-recommends iptables" in message
    assert "not in the cache" not in message


def test_applets_pointing_at_another_busybox_are_relinked(fake_cache: Path) -> None:
    applets = nettools.applets_dir()
    (applets / "wget").unlink()
    (applets / "wget").symlink_to("/old/busybox")
    with pytest.raises(ToolchainError, match="busybox applet links"):
        find_network_tools()
    nettools._link_applets(nettools.busybox_path())
    assert os.readlink(find_network_tools().applets / "wget") == str(nettools.busybox_path())


def test_a_busybox_without_an_applet_is_refused(fake_cache: Path) -> None:
    short = fake_cache / "short-busybox"
    short.write_text("#!/bin/sh\necho sh\n")
    short.chmod(0o755)
    with pytest.raises(ToolchainError, match="lacks the applets .*wget"):
        nettools._link_applets(short)


def test_without_root_apt_is_not_run_and_the_reason_is_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nettools, "host_command", lambda name: None)
    monkeypatch.setattr(nettools.os, "geteuid", lambda: 1000)

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(nettools.subprocess, "run", no_subprocess)
    said: list[str] = []
    nettools._install_host_packages(said.append)
    assert said == ["not installing iptables: not root"]


def test_sandbox_build_skips_the_network_tools_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sandbox_commands, "ensure_toolchain",
                        lambda progress: Toolchain({"helm": Path("/helm")}))
    monkeypatch.setattr(sandbox_commands, "ensure_default_release",
                        lambda helm, progress: CiliumRelease("1.18.4", Path("/c")))
    monkeypatch.setattr(sandbox_commands, "real_network_unsupported", lambda: "not root")

    def must_not_build(progress: object) -> None:
        raise AssertionError("built the network tools")

    monkeypatch.setattr(sandbox_commands, "ensure_network_tools", must_not_build)
    assert main(["sandbox", "build"]) == 0
    assert capsys.readouterr().err.strip() == "skipping the real-network tools: not root"


# ---- the built binaries -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tools() -> NetworkTools:
    unsupported = real_network_unsupported()
    if unsupported:
        pytest.skip(unsupported)
    try:
        return find_network_tools()
    except ToolchainError as error:
        pytest.skip(f"{error} (`make toolchain` builds them)")


def _run(*command: str | Path, env: dict[str, str] | None = None,
         stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], input=stdin, env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_flanneld_reports_its_release(tools: NetworkTools) -> None:
    done = _run(tools.flanneld, "--version")
    assert (done.returncode, done.stdout.strip() or done.stderr.strip()) == (0, "v0.28.10")


def test_coredns_holds_the_sandboxs_plugins_only(tools: NetworkTools) -> None:
    assert _run(tools.coredns, "-version").stdout.startswith("CoreDNS-1.15.0")
    listed = set(_run(tools.coredns, "-plugins").stdout.split())
    # prometheus registers as itself; the kubernetes plugin brings metadata and transfer along
    assert set(nettools.COREDNS_PLUGINS) <= listed
    assert not listed & {"forward", "loop", "etcd", "route53", "file"}


@pytest.mark.parametrize("plugin", CNI_PLUGINS)
def test_each_cni_plugin_answers_version(tools: NetworkTools, plugin: str) -> None:
    done = _run(tools.cni_bin / plugin, env={"CNI_COMMAND": "VERSION"},
                stdin='{"cniVersion": "0.4.0"}')
    assert done.returncode == 0, done.stderr
    # The flannel plugin (v0.9.1) stops at 0.4.0, so a flannel conflist must say 0.4.0.
    assert "0.4.0" in json.loads(done.stdout)["supportedVersions"]
    release = "v0.9.1" if plugin == "flannel" else "v1.10.0"
    assert f"CNI {plugin} plugin {release}" in _run(tools.cni_bin / plugin).stderr


def test_the_applets_are_busybox_on_a_bare_path(tools: NetworkTools) -> None:
    done = _run(tools.applets / "sh", "-c", "wget --help 2>&1 | head -n 1; printf 'a,b\\n' | "
                "cut -d , -f 2", env={"PATH": str(tools.applets)})
    assert done.stdout.splitlines()[0].startswith("BusyBox v1.37")
    assert done.stdout.splitlines()[1] == "b"


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _netexec(agnhost: Path, tls_dir: Path | None = None) -> Iterator[str]:
    """agnhost netexec on loopback, serving HTTPS with the key and cert in ``tls_dir`` if given;
    yields its base URL once /healthz says 200 (412 until its UDP server is up)."""
    port = _free_port(socket.SOCK_STREAM)
    command = [str(agnhost), "netexec", f"--http-port={port}",
               f"--udp-port={_free_port(socket.SOCK_DGRAM)}"]
    if tls_dir:
        command += [f"--tls-cert-file={tls_dir / 'tls.crt'}",
                    f"--tls-private-key-file={tls_dir / 'tls.key'}"]
    base = f"{'https' if tls_dir else 'http'}://127.0.0.1:{port}"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while _get(f"{base}/healthz")[0] != 200:
            assert server.poll() is None and time.monotonic() < deadline, "netexec did not start"
            time.sleep(0.2)
        yield base
    finally:
        server.kill()
        server.wait()


def _get(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, context=ssl._create_unverified_context(),
                                    timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return None, ""


def test_agnhost_netexec_serves_hostname_and_dial(tools: NetworkTools) -> None:
    assert "2.59" in _run(tools.agnhost, "--version").stdout
    with _netexec(tools.agnhost) as base:
        assert _get(f"{base}/hostname") == (200, socket.gethostname())
        port = base.rsplit(":", 1)[1]
        status, body = _get(f"{base}/dial?request=hostname&protocol=http&host=127.0.0.1"
                            f"&port={port}&tries=1")
        assert (status, json.loads(body)) == (200, {"responses": [socket.gethostname()]})


def _write_server_tls(directory: Path) -> None:
    """A serving key and cert for 127.0.0.1 from the sandbox's own CA code (ECDSA, as the
    sandbox API server's)."""
    ca = CertificateAuthority.create("test-ca")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    key, cert = ca.issue(name, server_ips=("127.0.0.1",))
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def test_the_probe_script_runs_on_the_applets_alone(tools: NetworkTools, tmp_path: Path) -> None:
    """The product's probe against a Go TLS server and an HTTP echo peer: busybox 1.37's wget
    with -T (Debian bookworm's 1.35 segfaults on -T), with nothing but the applets on PATH. (No
    DNS lookup here: the real-network sandbox's tests resolve through its CoreDNS.)"""
    _write_server_tls(tmp_path)
    report = tmp_path / "report"
    # The API server is one netexec (HTTPS), the echo peer another (plain HTTP, /hostname).
    with _netexec(tools.agnhost, tmp_path) as base, _netexec(tools.agnhost) as peer:
        env = {"PATH": str(tools.applets), "KUBERNETES_SERVICE_HOST": "127.0.0.1",
               "KUBERNETES_SERVICE_PORT": base.rsplit(":", 1)[1], "POD_IP": "10.244.1.5",
               "NODE_NAME": "worker-1", "PROBE_PEERS": "127.0.0.1",
               "PROBE_PEER_PORT": peer.rsplit(":", 1)[1], "PROBE_REPORT": str(report)}
        done = _run(tools.applets / "sh", "-c", PROBE_SCRIPT, env=env)
    parsed = ProbeReport.model_validate_json(report.read_text())
    assert (parsed.api_server.status, parsed.api_server.error) == (200, "")
    assert parsed.peers == {"127.0.0.1": True}
    assert done.returncode == 0, done.stderr
