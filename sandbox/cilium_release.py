"""Cilium's own Helm chart and CRDs, fetched from the `github.com/cilium/cilium` Go module.

The sandbox installs the chart Cilium publishes, not a copy written here: the module zip carries
the chart (`install/kubernetes/cilium`) and the CRDs the operator registers
(`pkg/k8s/apis/cilium.io/client/crds/`). `go mod download` fetches the zip through the module
proxy, which is reachable where the public Helm repository is not, and checks it against the
checksum database. Each version is unpacked once under the user's cache directory, next to the
built binaries, with a packaged `.tgz` of the chart for tests that serve it from a repository.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox.toolchain import ToolchainError, cache_root, go_binary

MODULE = "github.com/cilium/cilium"
CHART_IN_MODULE = Path("install/kubernetes/cilium")
CRDS_IN_MODULE = Path("pkg/k8s/apis/cilium.io/client/crds")


@dataclass(frozen=True)
class CiliumRelease:
    """One fetched Cilium version: its chart directory, packaged chart and CRD manifests."""

    version: str  # chart version, no leading "v"
    root: Path

    @property
    def chart_dir(self) -> Path:
        return self.root / "cilium"  # helm wants the directory named after the chart

    @property
    def package(self) -> Path:
        return self.root / f"cilium-{self.version}.tgz"

    @property
    def crds_dir(self) -> Path:
        return self.root / "crds"

    def crd_files(self) -> list[Path]:
        """Every CRD manifest of the release, in a stable order (v2 before v2alpha1)."""
        return sorted(self.crds_dir.glob("*/*.yaml"))

    @property
    def module(self) -> dict[str, str]:
        """What `go mod download -json` said of the module (version, sum, origin)."""
        data: dict[str, str] = json.loads((self.root / "module.json").read_text())
        return data


def release_path(version: str) -> CiliumRelease:
    return CiliumRelease(version, cache_root() / "cilium" / version.lstrip("v"))


def find_release(version: str) -> CiliumRelease:
    """A fetched release; raises ToolchainError saying how to fetch it when it is missing."""
    release = release_path(version)
    if not (release.root / "module.json").is_file():
        raise ToolchainError(f"the Cilium {release.version} chart is not fetched; "
                             "run `cilium-migrate sandbox build`")
    return release


def ensure_release(version: str, helm: Path,
                   progress: Callable[[str], None] | None = None) -> CiliumRelease:
    """Fetches and unpacks the release unless the cache has it; returns its paths."""
    release = release_path(version)
    if (release.root / "module.json").is_file():
        return release
    say = progress or (lambda message: None)
    say(f"fetching the Cilium {release.version} chart and CRDs ({MODULE} through the Go "
        "module proxy)")
    module = _download(release.version)
    source = Path(module["Dir"])
    partial = release.root.with_name(release.root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _copy_writable(source / CHART_IN_MODULE, partial / "cilium")
    for group in sorted((source / CRDS_IN_MODULE).iterdir()):
        if group.is_dir():
            _copy_writable(group, partial / "crds" / group.name)
    packaged = subprocess.run(
        [str(helm), "package", str(partial / "cilium"), "--destination", str(partial)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if packaged.returncode != 0:
        raise ToolchainError(f"helm package of the Cilium chart failed: {packaged.stdout.strip()}")
    keep: dict[str, str] = {k: module[k] for k in ("Path", "Version", "Sum") if k in module}
    keep["Origin"] = json.dumps(module.get("Origin", {}), sort_keys=True)
    (partial / "module.json").write_text(json.dumps(keep, indent=2) + "\n")
    shutil.rmtree(release.root, ignore_errors=True)
    partial.replace(release.root)  # atomic: a half-unpacked release is never taken for one
    return release


def _download(version: str) -> dict[str, str]:
    # Outside any module, `go mod download module@version` needs no go.mod; -mod=mod keeps a
    # GOFLAGS=-mod=vendor from the environment from refusing it.
    with tempfile.TemporaryDirectory(prefix="cilium-module-") as scratch:
        result = subprocess.run(
            [go_binary(), "mod", "download", "-json", f"{MODULE}@v{version}"],
            cwd=scratch, capture_output=True, text=True,
            env=_go_env())
    try:
        module: dict[str, str] = json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        module = {}
    if result.returncode != 0 or "Dir" not in module:
        said = module.get("Error") or result.stderr.strip() or result.stdout.strip()
        raise ToolchainError(f"cannot fetch {MODULE}@v{version}: {said}")
    return module


def _go_env() -> dict[str, str]:
    return {**os.environ, "GOFLAGS": "-mod=mod"}


def _copy_writable(source: Path, target: Path) -> None:
    """Copies a tree out of the read-only module cache and makes the copy removable."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def ensure_default_release(helm: Path,
                           progress: Callable[[str], None] | None = None) -> CiliumRelease:
    """The release of the spec's default Cilium version: what the sandbox, demo and tests use."""
    from plan.spec import DEFAULT_CILIUM_VERSION

    return ensure_release(DEFAULT_CILIUM_VERSION, helm, progress)
