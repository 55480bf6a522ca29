"""Builds and caches the sandbox's control-plane binaries from their Go modules.

There is no container engine on the machines we develop and test on, so etcd, the Kubernetes
control plane, kubectl, helm and an OCI registry (Distribution's, to serve charts in tests) are
compiled from the wrapper modules committed under ``sandbox/toolchain/`` (each pins one release,
with a ``go.sum``). Binaries land in a directory named after the release under the user's cache
directory, so a second run finds them and returns in well under a second, and two checkouts of
the project share one build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path(__file__).parent / "toolchain"

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.19.0"
# v3.1.1 is the newest release that builds with Go 1.25 (v3.1.2 asks for 1.26).
REGISTRY_VERSION = "v3.1.1"

# Fixed stamp: the build date only feeds `version` output, and a constant keeps links reproducible.
_BUILD_DATE = "2026-01-01T00:00:00Z"


class ToolchainError(RuntimeError):
    """The binaries cannot be built or found; the message says what to do."""


@dataclass(frozen=True)
class Binary:
    name: str
    module_dir: str  # under sandbox/toolchain/
    package: str  # Go package to build, relative to the module dir when it starts with "."
    version: str
    ldflags: tuple[str, ...]


def _kubernetes_ldflags() -> tuple[str, ...]:
    # Unstamped binaries report v0.0.0, which Helm refuses against a chart's kubeVersion.
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={_BUILD_DATE}",
        ]
    return tuple(flags)


BINARIES: tuple[Binary, ...] = (
    Binary("etcd", "etcd", ".", ETCD_VERSION, ()),
    *(
        Binary(name, "kubernetes", f"k8s.io/kubernetes/cmd/{name}", KUBERNETES_VERSION,
               _kubernetes_ldflags())
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ),
    # Helm's offline default Kubernetes version (for `helm template`) is stamped the same way as
    # upstream's release builds: from the client-go minor it is built with (0.34 for helm 3.19).
    Binary("helm", "helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION, (
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34",
    )),
    # An OCI registry on loopback, so that installing a chart from `oci://` is tested for real.
    Binary("registry", "registry", "github.com/distribution/distribution/v3/cmd/registry",
           REGISTRY_VERSION,
           (f"-X github.com/distribution/distribution/v3/version.version={REGISTRY_VERSION}",)),
)


def cache_root() -> Path:
    """Stable per-user cache directory, outside any checkout."""
    override = os.environ.get("CILIUM_MIGRATE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cilium-migrate"


def binary_path(binary: Binary) -> Path:
    return cache_root() / "bin" / f"{binary.name}-{binary.version}" / binary.name


@dataclass(frozen=True)
class Toolchain:
    """Paths of the built binaries, by name."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def find_toolchain() -> Toolchain:
    """Paths of already-built binaries; raises ToolchainError naming what is missing."""
    missing = [b.name for b in BINARIES if not binary_path(b).is_file()]
    if missing:
        raise ToolchainError(
            f"sandbox binaries not built: {', '.join(missing)}; run `cilium-migrate sandbox build`"
        )
    return Toolchain({b.name: binary_path(b) for b in BINARIES})


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "the Go toolchain (go 1.26 or newer; etcd 3.6.16 asks for it) is needed to build "
            "the sandbox's control plane; "
            "install it from your distribution or go.dev and make sure `go` is on PATH"
        )
    return go


def go_build(go: str, package: str, target: Path, *, cwd: Path, ldflags: Sequence[str] = (),
             what: str) -> None:
    """Builds one static Go binary into ``target``; ``what`` names it in the error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    command = [
        go, "build", "-trimpath",
        "-ldflags", " ".join(("-s", "-w", *ldflags)),
        "-o", str(partial), package,
    ]
    result = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise ToolchainError(f"building {what} failed:\n{tail}")
    partial.replace(target)  # atomic: a half-written binary is never taken for a built one


def _build(binary: Binary, go: str) -> None:
    go_build(go, binary.package, binary_path(binary), cwd=MODULES_DIR / binary.module_dir,
             ldflags=binary.ldflags, what=f"{binary.name} {binary.version}")


def ensure_toolchain(progress: Callable[[str], None] | None = None) -> Toolchain:
    """Builds whatever is missing from the cache and returns every binary's path."""
    say = progress or (lambda message: None)
    todo = [b for b in BINARIES if not binary_path(b).is_file()]
    if todo:
        go = go_binary()
        for index, binary in enumerate(todo, 1):
            say(f"[{index}/{len(todo)}] building {binary.name} {binary.version} "
                "(the first build takes several minutes)")
            started = time.monotonic()
            _build(binary, go)
            say(f"[{index}/{len(todo)}] built {binary.name} in {time.monotonic() - started:.0f}s")
    return find_toolchain()


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
