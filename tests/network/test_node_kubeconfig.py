"""Node kubeconfigs name the serving certificate's name when the URL's host is not in it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from sandbox import pki
from sandbox.network.node_kubeconfig import serving_names, write_node_kubeconfig


@pytest.fixture(scope="module")
def pki_paths(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiPaths:
    return pki.create_pki(tmp_path_factory.mktemp("pki"), "10.96.0.1")


def _cluster(path: Path) -> dict[str, str]:
    return yaml.safe_load(path.read_text())["clusters"][0]["cluster"]


def test_serving_certificate_names(pki_paths: pki.PkiPaths) -> None:
    names, addresses = serving_names(pki_paths.apiserver_cert)
    assert "kubernetes" in names
    assert {"10.96.0.1", "127.0.0.1"} <= addresses


@pytest.mark.parametrize(("server", "server_name"), [
    ("https://198.18.0.1:6443", "kubernetes"),  # the underlay gateway: not in the certificate
    ("https://10.96.0.1:443", None),
    ("https://kubernetes.default.svc:443", None),
])
def test_tls_server_name_only_when_needed(pki_paths: pki.PkiPaths, tmp_path: Path,
                                          server: str, server_name: str | None) -> None:
    path = write_node_kubeconfig(tmp_path / "node.kubeconfig", server, pki_paths.ca_cert,
                                 "secret-token")
    cluster = _cluster(path)
    assert cluster["server"] == server
    assert cluster["certificate-authority"] == str(pki_paths.ca_cert)
    assert cluster.get("tls-server-name") == server_name
    config = yaml.safe_load(path.read_text())
    assert config["users"][0]["user"] == {"token": "secret-token"}
    assert config["contexts"][0]["context"]["cluster"] == config["clusters"][0]["name"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
