"""Chart repositories on loopback for the Helm step's tests: a classic Helm repository (a
directory with an `index.yaml` served over HTTP) and an OCI registry (Distribution's, built by the
sandbox toolchain) served over TLS with a throwaway CA.

The OCI registry's CA reaches helm through `SSL_CERT_FILE`, which Go reads for its root
certificates, so the product is tested as an operator runs it against a registry with a private
CA: no "insecure" or plain-HTTP option.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from sandbox.pki import CertificateAuthority

# How long a freshly started registry may take to answer; it is ready in well under a second.
REGISTRY_START_SECONDS = 30.0


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # pytest shows stderr of failing tests; a request log would bury the failure


@dataclass(frozen=True)
class HelmRepository:
    url: str  # http://127.0.0.1:PORT
    directory: Path  # the served files: the packaged charts and index.yaml

    def index(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load((self.directory / "index.yaml").read_text())
        return data

    def indexed_digest(self, name: str, version: str) -> str:
        """The `digest` index.yaml lists for one chart version (hex, no algorithm prefix)."""
        for entry in self.index()["entries"][name]:
            if entry["version"] == version:
                return str(entry["digest"])
        raise KeyError(f"{name} {version} is not in {self.directory / 'index.yaml'}")


@contextmanager
def helm_repository(helm: Path, charts: list[Path], directory: Path) -> Iterator[HelmRepository]:
    """Serves `charts` (packaged) from `directory` with the index `helm repo index` writes for
    the server's own URL, as a chart museum or GitHub Pages repository would publish them."""
    directory.mkdir(parents=True, exist_ok=True)
    for chart in charts:
        (directory / chart.name).write_bytes(chart.read_bytes())
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    subprocess.run([str(helm), "repo", "index", str(directory), "--url", url],
                   check=True, capture_output=True, text=True, timeout=120)
    thread = threading.Thread(target=server.serve_forever, name="helm-repository", daemon=True)
    thread.start()
    try:
        yield HelmRepository(url, directory)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- OCI ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OciRegistry:
    host: str  # 127.0.0.1:PORT
    ca_file: Path  # the CA that signed the registry's serving certificate

    def reference(self, repository: str) -> str:
        return f"oci://{self.host}/{repository}"

    def helm_env(self) -> dict[str, str]:
        """The environment under which helm (Go) trusts this registry."""
        return {**os.environ, "SSL_CERT_FILE": str(self.ca_file)}

    def get_json(self, path: str, accept: str) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(f"https://{self.host}{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            data: dict[str, Any] = json.load(response)
            return data

    def chart_layer_digest(self, repository: str, tag: str) -> str:
        """The digest of the chart archive a pushed chart's manifest names, as the registry
        itself reports it ("sha256:<hex>")."""
        manifest = self.get_json(f"/v2/{repository}/manifests/{tag}",
                                 "application/vnd.oci.image.manifest.v1+json")
        [layer] = [layer for layer in manifest["layers"]
                   if layer["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"]
        return str(layer["digest"])

    def push(self, helm: Path, chart: Path, repository: str) -> None:
        result = subprocess.run([str(helm), "push", str(chart), self.reference(repository)],
                                env=self.helm_env(), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"helm push {chart.name} failed: {result.stderr}")


def write_throwaway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (the sandbox's kind) and a serving certificate for 127.0.0.1 signed by it:
    the (ca, cert, key) files."""
    ca = CertificateAuthority.create("chart-registry-test-ca")
    key, cert = ca.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                         server_ips=("127.0.0.1",))
    paths = directory / "ca.crt", directory / "registry.crt", directory / "registry.key"
    paths[0].write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def free_loopback_port() -> int:
    # The registry takes its address from its config file, so the port is chosen here; another
    # process taking it in between makes the start fail loudly, not wrongly.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def oci_registry(registry_binary: Path, directory: Path) -> Iterator[OciRegistry]:
    """Distribution's registry on loopback over TLS, storing blobs under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = write_throwaway_tls(directory)
    host = f"127.0.0.1:{free_loopback_port()}"
    config = directory / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": host, "secret": "test-only", "tls": {"certificate": str(cert),
                                                             "key": str(key)}},
    }))
    registry = OciRegistry(host, ca)
    with (directory / "registry.log").open("w") as log:
        # No trace exporter: the registry would otherwise try to send spans to a collector.
        process = subprocess.Popen([str(registry_binary), "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
        try:
            _wait_until_serving(registry, process, directory / "registry.log")
            yield registry
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_serving(registry: OciRegistry, process: subprocess.Popen[bytes],
                        log: Path) -> None:
    """Returns once the registry answers its API root; fails with its log if it exits or never
    answers."""
    deadline = time.monotonic() + REGISTRY_START_SECONDS
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the registry exited ({process.returncode}):\n"
                                 f"{log.read_text()}")
        try:
            registry.get_json("/v2/", "application/json")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise AssertionError(f"the registry did not answer within "
                                     f"{REGISTRY_START_SECONDS:.0f}s:\n{log.read_text()}"
                                     ) from None
            time.sleep(0.1)
