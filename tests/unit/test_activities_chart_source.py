"""Where the Helm step's chart comes from and how it is named: the helm arguments per source,
the name, version and digest read from a chart directory or a packaged chart, and the errors for
a path that is not a chart. No helm binary: the charts are written here."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.chart_source import (
    chart_origin,
    chart_reference,
    fetch_chart,
    read_local_chart,
)
from plan.contract import ChartRef, StepError

CHART_YAML = "apiVersion: v2\nname: demo\nversion: 0.3.1\n"


def write_chart(root: Path, chart_yaml: str = CHART_YAML) -> Path:
    """A minimal chart directory: Chart.yaml, values and one template."""
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(chart_yaml)
    (root / "values.yaml").write_text("replicas: 1\n")
    (root / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    return root


def package(directory: Path, archive: Path) -> Path:
    """The directory as `helm package` lays it out: NAME/... in a gzipped tar."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def refused(location: Path) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        read_local_chart(location)
    assert raised.value.type == StepError.HELM_FAILED and raised.value.non_retryable
    return raised.value


# -- helm's chart argument and the recorded origin, per source ---------------------------------

def test_a_repository_chart_is_the_name_with_the_repository_flag() -> None:
    chart = ChartRef(repo="https://helm.cilium.io/", name="cilium")
    assert chart_reference(chart) == ["cilium", "--repo", "https://helm.cilium.io"]
    assert chart_origin(chart) == "https://helm.cilium.io"


def test_an_oci_chart_is_the_full_reference_as_the_argument() -> None:
    chart = ChartRef(repo="oci://registry.example/charts/", name="cilium")
    assert chart_reference(chart) == ["oci://registry.example/charts/cilium"]
    assert chart_origin(chart) == "oci://registry.example/charts/cilium"


def test_a_local_chart_is_its_path() -> None:
    chart = ChartRef(path="/srv/charts/cilium-1.18.4.tgz")
    assert chart_reference(chart) == ["/srv/charts/cilium-1.18.4.tgz"]
    assert chart_origin(chart) == "/srv/charts/cilium-1.18.4.tgz"


# -- a chart directory --------------------------------------------------------------------------

def test_a_directory_is_named_by_its_chart_yaml_with_a_tree_digest(tmp_path: Path) -> None:
    chart = read_local_chart(write_chart(tmp_path / "demo"))
    assert (chart.name, chart.version) == ("demo", "0.3.1")
    assert chart.location == tmp_path / "demo"
    assert chart.digest.startswith("sha256-tree:") and len(chart.digest) == 12 + 64


def test_a_directory_digest_is_stable_and_follows_every_file(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "demo")
    first = read_local_chart(root).digest
    assert read_local_chart(root).digest == first
    # The same files elsewhere: the digest is of the content, not of where it lies.
    assert read_local_chart(write_chart(tmp_path / "copy" / "demo")).digest == first

    (root / "templates" / "cm.yaml").write_text("kind: Secret\n")
    changed = read_local_chart(root).digest
    assert changed != first
    # A renamed file with the same bytes is a different chart too.
    (root / "templates" / "cm.yaml").rename(root / "templates" / "secret.yaml")
    assert read_local_chart(root).digest not in (first, changed)


def test_moving_bytes_between_files_changes_the_directory_digest(tmp_path: Path) -> None:
    # Lengths are part of the hash, so "ab" + "c" cannot collide with "a" + "bc".
    one, two = tmp_path / "one", tmp_path / "two"
    for root, (a, b) in ((one, ("ab", "c")), (two, ("a", "bc"))):
        write_chart(root)
        (root / "templates" / "a.yaml").write_text(a)
        (root / "templates" / "b.yaml").write_text(b)
    assert read_local_chart(one).digest != read_local_chart(two).digest


# -- a packaged chart ---------------------------------------------------------------------------

def test_a_packaged_chart_is_named_by_its_top_chart_yaml_with_the_file_digest(
        tmp_path: Path) -> None:
    root = write_chart(tmp_path / "demo")
    # A subchart's Chart.yaml lies deeper and must not be taken for the chart's own.
    write_chart(root / "charts" / "sub", "apiVersion: v2\nname: sub\nversion: 9.9.9\n")
    archive = package(root, tmp_path / "demo-0.3.1.tgz")
    chart = read_local_chart(archive)
    assert (chart.name, chart.version) == ("demo", "0.3.1")
    assert chart.digest == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()


# -- what is refused, and how it is said --------------------------------------------------------

def test_a_missing_path_says_it_does_not_exist(tmp_path: Path) -> None:
    error = refused(tmp_path / "nowhere")
    assert f"{tmp_path / 'nowhere'} does not exist" in error.message


def test_a_directory_without_chart_yaml_is_not_a_chart(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("a: 1\n")
    assert "is not a Helm chart: it has no Chart.yaml" in refused(tmp_path).message


@pytest.mark.parametrize(("content", "expected"), [
    (b"name: [unclosed\n", "Chart.yaml is not YAML"),
    (b"apiVersion: v2\nname: demo\n", "lacks a name or version"),
    (b"- a list\n", "lacks a name or version"),
    (b"name: d\xe9mo\nversion: 1.0.0\n", "Chart.yaml is not UTF-8 text"),
])
def test_a_bad_chart_yaml_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    (tmp_path / "Chart.yaml").write_bytes(content)
    assert expected in refused(tmp_path).message


def test_a_file_that_is_not_a_packaged_chart_says_what_to_give(tmp_path: Path) -> None:
    not_an_archive = tmp_path / "values.yaml"
    not_an_archive.write_text("a: 1\n")
    message = refused(not_an_archive).message
    assert f"{not_an_archive} is not a packaged chart" in message
    assert "give a chart directory or a .tgz made by `helm package`" in message
    assert "\n" not in message  # one line, not one per compression tarfile tried


def test_a_corrupt_gzip_is_refused_without_a_traceback(tmp_path: Path) -> None:
    corrupt = tmp_path / "demo-0.3.1.tgz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"not deflate data" * 8)
    assert "is not a packaged chart" in refused(corrupt).message


def test_an_archive_without_a_top_chart_yaml_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "flat.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        data = CHART_YAML.encode()
        member = tarfile.TarInfo("Chart.yaml")  # not under NAME/, as helm package never lays it
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    assert f"{archive} holds no NAME/Chart.yaml" in refused(archive).message


# -- the version the spec installs --------------------------------------------------------------

def test_a_local_chart_of_another_version_is_refused_naming_both(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "demo")
    with pytest.raises(ApplicationError) as raised:
        fetch_chart("helm-is-not-run-for-a-path", ChartRef(path=str(root), version="0.4.0"),
                    tmp_path / "pulled")
    error = raised.value
    assert error.type == StepError.HELM_FAILED and error.non_retryable
    assert error.message == (
        f"the chart at {root} is demo 0.3.1, but the spec installs 0.4.0: set cilium.version "
        "to 0.3.1 or point cilium.chart at the 0.4.0 chart")


def test_a_local_chart_of_the_asked_version_is_used_where_it_is(tmp_path: Path) -> None:
    archive = package(write_chart(tmp_path / "demo"), tmp_path / "demo-0.3.1.tgz")
    pulled = tmp_path / "pulled"
    chart = fetch_chart("helm-is-not-run-for-a-path",
                        ChartRef(path=str(archive), version="0.3.1"), pulled)
    assert chart.location == archive and chart.version == "0.3.1"
    assert not pulled.exists()  # nothing was copied or pulled


# -- a pull, with a stand-in for helm that records its arguments --------------------------------

def fake_helm(tmp_path: Path, archives: list[Path]) -> Path:
    """An executable that records its argv and copies `archives` into --destination, as
    `helm pull` leaves its archive there."""
    script = tmp_path / "helm"
    script.write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        f"open({str(tmp_path / 'argv')!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "destination = sys.argv[sys.argv.index('--destination') + 1]\n"
        f"for archive in {[str(a) for a in archives]!r}:\n"
        "    shutil.copy(archive, destination)\n")
    script.chmod(0o755)
    return script


def test_a_repository_chart_is_pulled_at_the_version_and_read_from_the_pull(
        tmp_path: Path) -> None:
    archive = package(write_chart(tmp_path / "demo"), tmp_path / "demo-0.3.1.tgz")
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm = fake_helm(tmp_path, [archive])
    chart = fetch_chart(str(helm), ChartRef(repo="https://charts.example", name="demo",
                                            version="0.3.1"), pulled)
    assert (tmp_path / "argv").read_text().splitlines() == [
        "pull", "demo", "--repo", "https://charts.example", "--destination", str(pulled),
        "--version", "0.3.1"]
    assert chart.location == pulled / archive.name
    assert chart.digest == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()


def test_a_pull_that_leaves_no_single_archive_is_an_error(tmp_path: Path) -> None:
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    with pytest.raises(ApplicationError) as raised:
        fetch_chart(str(fake_helm(tmp_path, [])), ChartRef(repo="oci://registry.example/c",
                                                           name="demo", version="0.3.1"), pulled)
    assert raised.value.type == StepError.HELM_FAILED
    assert f"helm pull left 0 archives in {pulled}; expected one" == raised.value.message


def test_a_failed_pull_says_which_chart_version_and_source_before_helms_words(
        tmp_path: Path) -> None:
    helm = tmp_path / "helm"
    helm.write_text("#!/bin/sh\necho 'Error: 127.0.0.1:5000/charts/demo:0.3.1: not found' >&2\n"
                    "exit 1\n")
    helm.chmod(0o755)
    (tmp_path / "pulled").mkdir()
    with pytest.raises(ApplicationError) as raised:
        fetch_chart(str(helm), ChartRef(repo="oci://127.0.0.1:5000/charts", name="demo",
                                        version="0.3.1"), tmp_path / "pulled")
    assert raised.value.type == StepError.HELM_FAILED and raised.value.non_retryable
    assert raised.value.message == (
        "cannot fetch chart demo 0.3.1 from oci://127.0.0.1:5000/charts/demo: helm pull failed: "
        "Error: 127.0.0.1:5000/charts/demo:0.3.1: not found")
