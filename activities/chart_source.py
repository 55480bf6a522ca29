"""The chart to install, brought onto this machine and named exactly: name, version, digest.

Three sources, as the spec gives them:

- a Helm repository (`repo: https://...` + `name`): `helm pull NAME --repo URL --version V`;
- an OCI registry (`repo: oci://host/path` + `name`): `helm pull oci://host/path/NAME --version V`
  (Helm has no `--repo` for OCI: the reference is the chart argument itself);
- a local `path`: a chart directory or a packaged `.tgz`, used where it is.

Whatever is pulled is the file that gets installed, so the digest recorded is the digest of what
ran: for an archive the SHA-256 of the `.tgz` (the `digest` a repository's index.yaml lists, and
the chart layer's digest in an OCI registry); for a directory a SHA-256 over its files (relative
path and content, in path order), since a directory has no archive to hash.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from temporalio.exceptions import ApplicationError

from activities.context import step_error
from activities.helm_cli import run_helm
from plan.contract import ChartRef, InstalledChart, StepError

PULL_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class LocalChart:
    """A chart on this machine: what helm is given, and what it is."""

    location: Path  # a chart directory or a .tgz
    name: str
    version: str
    digest: str  # "sha256:<hex>" for an archive, "sha256-tree:<hex>" for a directory

    def installed_from(self, chart: ChartRef) -> InstalledChart:
        """What the steps record of this chart: its identity and where it came from."""
        return InstalledChart(name=self.name, version=self.version, digest=self.digest,
                              source=chart_origin(chart))


def chart_reference(chart: ChartRef) -> list[str]:
    """helm's chart argument and source flags for a repository or OCI chart (no version)."""
    origin = chart_origin(chart)
    if chart.path or origin.startswith("oci://"):
        return [origin]
    return [chart.name, "--repo", origin]


def chart_origin(chart: ChartRef) -> str:
    """Where the chart came from, as recorded beside its digest: the repository URL, the OCI
    reference (which includes the chart's name), or the local path."""
    if chart.path:
        return chart.path
    repo = (chart.repo or "").rstrip("/")
    return f"{repo}/{chart.name}" if repo.startswith("oci://") else repo


def fetch_chart(helm: str, chart: ChartRef, into: Path) -> LocalChart:
    """The chart on this machine, pulled into `into` unless it is a local path. A chart of
    another version than the one asked for is refused: the values were made for that one."""
    if chart.path:
        local = read_local_chart(Path(chart.path))
    else:
        argv = [helm, "pull", *chart_reference(chart), "--destination", str(into)]
        if chart.version:
            argv += ["--version", chart.version]
        try:
            run_helm(argv, PULL_TIMEOUT_SECONDS)
        except ApplicationError as error:
            # helm's words name the reference in its own terms (OCI's are cryptic); say first
            # which chart, version and source the step was after.
            raise step_error(StepError.HELM_FAILED,
                             f"cannot fetch chart {chart.name} {chart.version or '(latest)'} "
                             f"from {chart_origin(chart)}: {error.message}") from None
        pulled = sorted(into.glob("*.tgz"))
        if len(pulled) != 1:
            raise step_error(StepError.HELM_FAILED,
                             f"helm pull left {len(pulled)} archives in {into}; expected one")
        local = read_local_chart(pulled[0])
    if chart.version and local.version != chart.version:
        raise step_error(
            StepError.HELM_FAILED,
            f"the chart at {local.location} is {local.name} {local.version}, but the spec "
            f"installs {chart.version}: set cilium.version to {local.version} or point "
            f"cilium.chart at the {chart.version} chart")
    return local


def read_local_chart(location: Path) -> LocalChart:
    """Name, version and digest of a chart directory or archive; a clear error when it is
    neither."""
    if location.is_dir():
        chart_yaml = location / "Chart.yaml"
        if not chart_yaml.is_file():
            raise step_error(StepError.HELM_FAILED,
                             f"{location} is not a Helm chart: it has no Chart.yaml")
        metadata = _metadata(chart_yaml.read_bytes(), chart_yaml)
        return LocalChart(location, metadata["name"], metadata["version"],
                          "sha256-tree:" + _tree_digest(location))
    if location.is_file():
        metadata = _metadata(_chart_yaml_in_archive(location), location)
        return LocalChart(location, metadata["name"], metadata["version"],
                          "sha256:" + _file_digest(location))
    raise step_error(StepError.HELM_FAILED,
                     f"chart path {location} does not exist on the worker's machine")


def _metadata(raw: bytes, where: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise step_error(StepError.HELM_FAILED, f"{where}: Chart.yaml is not UTF-8 text"
                         ) from None
    except yaml.YAMLError as error:
        raise step_error(StepError.HELM_FAILED, f"{where}: Chart.yaml is not YAML: {error}"
                         ) from None
    if not isinstance(data, dict) or not data.get("name") or not data.get("version"):
        raise step_error(StepError.HELM_FAILED, f"{where}: Chart.yaml lacks a name or version")
    return {"name": str(data["name"]), "version": str(data["version"])}


def _chart_yaml_in_archive(archive: Path) -> bytes:
    """The top directory's Chart.yaml of a packaged chart (NAME/Chart.yaml)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        return extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        # tarfile lists every compression it tried, one per line; the first line says enough.
        reason = str(error).splitlines()[0].rstrip(":") if str(error) else type(error).__name__
        raise step_error(StepError.HELM_FAILED,
                         f"{archive} is not a packaged chart: {reason}; give a chart "
                         "directory or a .tgz made by `helm package`") from None
    raise step_error(StepError.HELM_FAILED, f"{archive} holds no NAME/Chart.yaml")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix().encode()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        content = path.read_bytes()
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()
