"""The Helm step's chart sources for real: Cilium's packaged chart served from a Helm repository
over HTTP and from an OCI registry over TLS, both on loopback, pulled by the product with the
sandbox's helm and installed into the session sandbox. The recorded digest is compared with what
the repository's own index and the registry's own manifest say of the chart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.chart_source import fetch_chart
from activities.context import ActivityContext
from activities.registry import MigrationActivities
from plan.contract import ChartRef, HelmInput, HelmResult, InstalledChart, StepError
from plan.policies import ClusterRef
from plan.spec import DEFAULT_CILIUM_VERSION
from sandbox.cilium_release import release_path
from sandbox.toolchain import Toolchain
from tests.chart_repos import HelmRepository, OciRegistry, helm_repository, oci_registry
from tests.conftest import MIGRATION_VALUES, Sandbox

VERSION = DEFAULT_CILIUM_VERSION
PACKAGE = release_path(VERSION).package
CLUSTER = ClusterRef(name="sandbox")


@pytest.fixture(scope="module")
def repository(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[HelmRepository]:
    with helm_repository(toolchain["helm"], [PACKAGE],
                         tmp_path_factory.mktemp("helm-repository")) as served:
        yield served


@pytest.fixture(scope="module")
def registry(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OciRegistry]:
    with oci_registry(toolchain["registry"], tmp_path_factory.mktemp("oci-registry")) as served:
        served.push(toolchain["helm"], PACKAGE, "charts")
        yield served


@pytest.fixture
def trust_registry(registry: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """helm, run by the product, trusts the registry's CA the way an operator's would: through
    the environment, not a product option."""
    monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))


def failure(helm: Path, chart: ChartRef, into: Path) -> ApplicationError:
    into.mkdir()
    with pytest.raises(ApplicationError) as raised:
        fetch_chart(str(helm), chart, into)
    assert raised.value.type == StepError.HELM_FAILED and raised.value.non_retryable
    return raised.value


def install(sandbox: Sandbox, chart: ChartRef) -> tuple[int, HelmResult]:
    """The Helm step as the workflow runs it, upgrading the session's own Cilium release with
    the `cilium` fixture's values (so its pods are left as they are); the revision before and
    the step's result."""
    steps = MigrationActivities(ActivityContext(default_kubeconfig=str(sandbox.kubeconfig),
                                                helm=str(sandbox.toolchain["helm"])))
    before = json.loads(sandbox.helm("status", "cilium", "-n", "kube-system", "-o", "json").stdout)
    result = ActivityEnvironment().run(steps.helm_upgrade, HelmInput(
        cluster=CLUSTER, namespace="kube-system", chart=chart, values=MIGRATION_VALUES,
        timeout_seconds=120))
    return int(before["version"]), result


# -- a Helm repository over HTTP ----------------------------------------------------------------

def test_a_repository_chart_is_pulled_with_the_digest_its_index_lists(
        toolchain: Toolchain, repository: HelmRepository, tmp_path: Path) -> None:
    chart = fetch_chart(str(toolchain["helm"]),
                        ChartRef(repo=repository.url, name="cilium", version=VERSION), tmp_path)
    assert (chart.name, chart.version) == ("cilium", VERSION)
    assert chart.digest == "sha256:" + repository.indexed_digest("cilium", VERSION)
    assert chart.digest == "sha256:" + hashlib.sha256(PACKAGE.read_bytes()).hexdigest()


def test_a_version_the_repository_lacks_is_named_in_the_error(
        toolchain: Toolchain, repository: HelmRepository, tmp_path: Path) -> None:
    error = failure(toolchain["helm"],
                    ChartRef(repo=repository.url, name="cilium", version="1.18.99"),
                    tmp_path / "pulled")
    assert error.message.startswith(
        f"cannot fetch chart cilium 1.18.99 from {repository.url}: helm pull failed: ")
    assert 'chart "cilium" version "1.18.99" not found' in error.message


@pytest.mark.sandbox
def test_cilium_installs_from_a_helm_repository_recording_the_indexed_digest(
        sandbox: Sandbox, cilium: None, repository: HelmRepository) -> None:
    before, result = install(sandbox, ChartRef(repo=repository.url, name="cilium",
                                               version=VERSION))
    assert result.revision == before + 1
    assert result.chart == InstalledChart(
        name="cilium", version=VERSION,
        digest="sha256:" + repository.indexed_digest("cilium", VERSION), source=repository.url)


# -- an OCI registry over TLS -------------------------------------------------------------------

def test_an_oci_chart_is_pulled_with_the_digest_of_the_registry_layer(
        toolchain: Toolchain, registry: OciRegistry, trust_registry: None,
        tmp_path: Path) -> None:
    chart = fetch_chart(str(toolchain["helm"]), ChartRef(
        repo=registry.reference("charts"), name="cilium", version=VERSION), tmp_path)
    assert (chart.name, chart.version) == ("cilium", VERSION)
    assert chart.digest == registry.chart_layer_digest("charts/cilium", VERSION)


def test_a_version_the_registry_lacks_is_named_in_the_error(
        toolchain: Toolchain, registry: OciRegistry, trust_registry: None,
        tmp_path: Path) -> None:
    error = failure(toolchain["helm"], ChartRef(repo=registry.reference("charts"),
                                                name="cilium", version="1.18.99"),
                    tmp_path / "pulled")
    assert error.message.startswith(f"cannot fetch chart cilium 1.18.99 from "
                                    f"{registry.reference('charts')}/cilium: helm pull failed: ")
    assert f"{registry.host}/charts/cilium:1.18.99: not found" in error.message


def test_an_untrusted_registry_is_refused_naming_the_certificate(
        toolchain: Toolchain, registry: OciRegistry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the CA the registry's certificate is unknown: helm must not fall back to anything
    # weaker, and the operator reads why.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    error = failure(toolchain["helm"], ChartRef(repo=registry.reference("charts"),
                                                name="cilium", version=VERSION),
                    tmp_path / "pulled")
    assert "certificate signed by unknown authority" in error.message


@pytest.mark.sandbox
def test_cilium_installs_from_an_oci_registry_recording_the_layer_digest(
        sandbox: Sandbox, cilium: None, registry: OciRegistry, trust_registry: None) -> None:
    reference = registry.reference("charts")
    before, result = install(sandbox, ChartRef(repo=reference, name="cilium", version=VERSION))
    assert result.revision == before + 1
    assert result.chart == InstalledChart(
        name="cilium", version=VERSION,
        digest=registry.chart_layer_digest("charts/cilium", VERSION),
        source=f"{reference}/cilium")
