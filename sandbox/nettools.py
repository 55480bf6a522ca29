"""Builds and caches the binaries of the sandbox's real-network mode and installs its host packages.

In that mode nodes are Linux network namespaces running the real flanneld, pods get their
interfaces from the real CNI plugins, and pod processes are agnhost, CoreDNS or busybox shell
scripts.
The Go binaries are built like the control plane's (see ``toolchain.py``) into the same cache,
and so is a static busybox taken from Debian's archive; iptables (which flanneld calls) is a host
package, installed with apt-get when we are root.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sandbox.toolchain import (
    KUBERNETES_VERSION,
    MODULES_DIR,
    ToolchainError,
    cache_root,
    go_binary,
    go_build,
)

FLANNEL_VERSION = "v0.28.10"
# Backends whose imports are cut from flanneld's main.go: tencentvpc's SDK module is not served
# by the Go module proxy, and udp needs cgo. The sandbox uses vxlan only.
_DROPPED_FLANNEL_BACKENDS = ("tencentvpc", "udp")

CNI_PLUGINS_VERSION = "v1.10.0"
# The flannel CNI plugin left containernetworking/plugins after v0.9.1; its new module
# (github.com/flannel-io/cni-plugin) is not served by the proxy at any version.
CNI_FLANNEL_VERSION = "v0.9.1"
_CNI_PACKAGES = {
    "bridge": "plugins/main/bridge",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
    "portmap": "plugins/meta/portmap",
    "ptp": "plugins/main/ptp",
}
CNI_PLUGINS = (*_CNI_PACKAGES, "flannel")
_CNI_BUILDVERSION = "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion"

# test/images/agnhost/VERSION at k8s.io/kubernetes v1.35.4: the image tag this build matches.
AGNHOST_VERSION = "2.59"

COREDNS_VERSION = "v1.15.0"
# The plugins the sandbox's Corefile (the `coredns` ConfigMap in manifests/cluster-addons.yaml)
# uses, by directive name: kubeadm's Corefile without `forward` and `loop`, since nothing
# outside the sandbox answers. Only these are compiled in (CoreDNS's documented way to choose
# plugins at compile time: a main package that imports them and sets dnsserver.Directives).
COREDNS_PLUGINS = ("errors", "health", "ready", "kubernetes", "prometheus", "cache", "reload",
                   "loadbalance")
_COREDNS_MODULE = "github.com/coredns/coredns"
_COREDNS_MAIN_DIR = "cmd/sandbox-coredns"

# Host command -> the Debian package that provides it.
HOST_PACKAGES = {"iptables": "iptables"}

# Debian bookworm's busybox (1.35) is built without wget's -T, and `wget -T 5` (which the probe
# script runs) segfaults; Debian fixed that in 1.36.1-5. Trixie's busybox-static is 1.37, the
# release the probe is written against, and being static it runs on any Linux host.
BUSYBOX_VERSION = "1.37"
_BUSYBOX_APT_SOURCE = ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                       "http://deb.debian.org/debian trixie main")

# What a pod's shell script may call; each is a symlink to busybox.
APPLETS = (
    "sh", "[", "[[", "test", "echo", "printf", "cat", "sleep", "true", "false", "env", "timeout",
    "wget", "ping", "nslookup", "nc", "hostname", "uname", "id", "ps", "kill",
    "sed", "awk", "grep", "tr", "cut", "head", "tail", "wc", "sort", "uniq", "tee", "xargs",
    "expr", "seq", "date", "basename", "dirname",
    "ls", "pwd", "mkdir", "mktemp", "rm", "cp", "mv", "ln", "touch", "chmod", "readlink",
)

# apt installs into sbin, which is not on every user's PATH.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_APT_LISTS = Path("/var/lib/apt/lists")


@dataclass(frozen=True)
class NetworkTools:
    flanneld: Path
    cni_bin: Path  # directory with bridge, host-local, loopback, portmap, ptp, flannel
    agnhost: Path
    coredns: Path
    busybox: Path
    iptables: Path
    applets: Path  # directory of busybox applet symlinks, for a pod process's PATH


def flanneld_path() -> Path:
    return cache_root() / "bin" / f"flanneld-{FLANNEL_VERSION}" / "flanneld"


def cni_bin_dir() -> Path:
    return cache_root() / "bin" / f"cni-plugins-{CNI_PLUGINS_VERSION}+flannel-{CNI_FLANNEL_VERSION}"


def agnhost_path() -> Path:
    return cache_root() / "bin" / f"agnhost-{KUBERNETES_VERSION}" / "agnhost"


def coredns_path() -> Path:
    return cache_root() / "bin" / f"coredns-{COREDNS_VERSION}" / "coredns"


def busybox_path() -> Path:
    return cache_root() / "bin" / f"busybox-{BUSYBOX_VERSION}" / "busybox"


def applets_dir() -> Path:
    return cache_root() / "bin" / "busybox-applets"


def host_command(name: str) -> Path | None:
    found = shutil.which(name) or shutil.which(name, path=_SYSTEM_PATH)
    return Path(found) if found else None


def real_network_unsupported() -> str | None:
    """One line saying why this machine cannot run the real network mode, or None."""
    if not sys.platform.startswith("linux"):
        return f"the real network mode needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the real network mode needs root (it creates network namespaces and veth pairs)"
    if host_command("ip") is None:
        return "the real network mode needs the `ip` command; install iproute2"
    return None


def _applets_missing(busybox: Path) -> list[str]:
    directory = applets_dir()
    target = str(busybox)
    return [a for a in APPLETS
            if not (directory / a).is_symlink() or os.readlink(directory / a) != target]


def find_network_tools() -> NetworkTools:
    """Paths of the built binaries and installed packages; raises ToolchainError naming what is
    missing and the command that installs it."""
    absent: list[str] = []
    if not flanneld_path().is_file():
        absent.append(f"flanneld {FLANNEL_VERSION}")
    plugins = [p for p in CNI_PLUGINS if not (cni_bin_dir() / p).is_file()]
    if plugins:
        absent.append(f"CNI plugins ({', '.join(plugins)})")
    if not agnhost_path().is_file():
        absent.append(f"agnhost {KUBERNETES_VERSION}")
    if not coredns_path().is_file():
        absent.append(f"CoreDNS {COREDNS_VERSION}")
    if not busybox_path().is_file():
        absent.append(f"busybox {BUSYBOX_VERSION}")
    elif _applets_missing(busybox_path()):
        absent.append(f"busybox applet links in {applets_dir()}")
    host = {name: host_command(name) for name in HOST_PACKAGES}
    uninstalled = [HOST_PACKAGES[name] for name, path in host.items() if path is None]

    problems = []
    if absent:
        problems.append(f"not in the cache: {', '.join(absent)}; "
                        "run `cilium-migrate sandbox build`")
    if uninstalled:
        problems.append(
            f"not installed: {', '.join(uninstalled)}; as root run `apt-get install "
            f"--no-install-recommends {' '.join(uninstalled)}` (or `cilium-migrate sandbox build`)")
    if problems:
        raise ToolchainError("real-network sandbox tools missing: " + "; ".join(problems))
    iptables = host["iptables"]
    assert iptables is not None
    return NetworkTools(flanneld=flanneld_path(), cni_bin=cni_bin_dir(), agnhost=agnhost_path(),
                        coredns=coredns_path(), busybox=busybox_path(), iptables=iptables,
                        applets=applets_dir())


@contextmanager
def _cache_lock() -> Iterator[None]:
    # Two checkouts share the cache, and apt-get cannot run twice at once.
    path = cache_root() / "bin" / ".nettools.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _cannot_install_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"apt-get is for Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "not root"
    if host_command("apt-get") is None:
        return "no apt-get on this machine"
    return None


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-10:])
        raise ToolchainError(f"{what} failed:\n{tail}")
    return result.stdout


def _apt_get(*args: str) -> None:
    # Waits for another apt run's lock instead of failing at once.
    _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", *args], f"`apt-get {' '.join(args)}`")


def _install_host_packages(say: Callable[[str], None]) -> None:
    missing = [pkg for name, pkg in HOST_PACKAGES.items() if host_command(name) is None]
    if not missing:
        return
    reason = _cannot_install_reason()
    if reason is not None:
        say(f"not installing {', '.join(missing)}: {reason}")
        return
    say(f"installing {', '.join(missing)} with apt-get")
    install = ("install", "-y", "--no-install-recommends", *missing)
    updated = not any(_APT_LISTS.glob("*_Packages*"))
    if updated:
        _apt_get("update")
    try:
        _apt_get(*install)
    except ToolchainError:
        if updated:
            raise
        _apt_get("update")  # stale lists name package versions the mirror no longer has
        _apt_get(*install)


def _writable_module(go: str, module: str, version: str, into: Path, what: str) -> Path:
    """A writable copy of ``module`` at ``version`` (the module cache is read-only; the copy is
    edited and cleaned up)."""
    download = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"],
                              cwd=into.parent, capture_output=True, text=True)
    if download.returncode != 0:
        raise ToolchainError(f"downloading {what} {version} failed:\n"
                             f"{download.stdout.strip()}\n{download.stderr.strip()}")
    shutil.copytree(json.loads(download.stdout)["Dir"], into, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(into):
        os.chmod(directory, 0o755)
    return into


def _build_flanneld(go: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cilium-migrate-flannel-") as scratch:
        source = _writable_module(go, "github.com/flannel-io/flannel", FLANNEL_VERSION,
                                  Path(scratch) / "flannel", what="flannel")
        main = source / "main.go"
        lines = main.read_text().splitlines(keepends=True)
        dropped = {f'_ "github.com/flannel-io/flannel/pkg/backend/{b}"'
                   for b in _DROPPED_FLANNEL_BACKENDS}
        kept = [line for line in lines if line.strip() not in dropped]
        if len(lines) - len(kept) != len(dropped):
            raise ToolchainError(
                f"flannel {FLANNEL_VERSION}'s main.go does not import the backends "
                f"{', '.join(_DROPPED_FLANNEL_BACKENDS)} as expected; "
                "update _DROPPED_FLANNEL_BACKENDS in sandbox/nettools.py")
        main.write_text("".join(kept))
        stamp = f"-X github.com/flannel-io/flannel/pkg/version.Version={FLANNEL_VERSION}"
        go_build(go, ".", flanneld_path(), cwd=source, ldflags=(stamp,),
                 what=f"flanneld {FLANNEL_VERSION}")


def _build_cni_plugins(go: str) -> None:
    for name in CNI_PLUGINS:
        target = cni_bin_dir() / name
        if target.is_file():
            continue
        if name == "flannel":
            package, module, version = ("plugins/meta/flannel", "cni-flannel",
                                        CNI_FLANNEL_VERSION)
        else:
            package, module, version = _CNI_PACKAGES[name], "cni-plugins", CNI_PLUGINS_VERSION
        go_build(go, f"github.com/containernetworking/plugins/{package}", target,
                 cwd=MODULES_DIR / module, ldflags=(f"-X {_CNI_BUILDVERSION}={version}",),
                 what=f"CNI plugin {name} {version}")


def _build_agnhost(go: str) -> None:
    go_build(go, "k8s.io/kubernetes/test/images/agnhost", agnhost_path(),
             cwd=MODULES_DIR / "kubernetes", ldflags=(f"-X main.Version={AGNHOST_VERSION}",),
             what=f"agnhost {KUBERNETES_VERSION}")


def coredns_main(directives: list[str], packages: dict[str, str]) -> str:
    """The main package of a CoreDNS with only ``COREDNS_PLUGINS``, after CoreDNS's "compile
    time enabling or disabling plugins" (coredns.io, 2017-07-25): import the plugins, set
    ``dnsserver.Directives`` to them in upstream's order, run ``coremain``. ``directives`` is
    upstream's ordered list (core/dnsserver/zdirectives.go), ``packages`` maps a directive to
    its package (plugin.cfg)."""
    missing = sorted(set(COREDNS_PLUGINS) - (set(directives) & set(packages)))
    if missing:
        raise ToolchainError(f"CoreDNS {COREDNS_VERSION} has no plugin {', '.join(missing)}; "
                             "update COREDNS_PLUGINS in sandbox/nettools.py")
    ordered = [d for d in directives if d in COREDNS_PLUGINS]
    imports = sorted({packages[d] for d in ordered})
    lines = ["// Generated by cilium-migrate's sandbox/nettools.py: CoreDNS with the sandbox's",
             "// plugins only.", "package main", "", "import ("]
    lines += [f'\t_ "{package}"' for package in imports]
    lines += ["", f'\t"{_COREDNS_MODULE}/core/dnsserver"',
              f'\t"{_COREDNS_MODULE}/coremain"', ")", "",
              "func init() {", "\tdnsserver.Directives = []string{"]
    lines += [f'\t\t"{d}",' for d in ordered]
    lines += ["\t}", "}", "", "func main() {", "\tcoremain.Run()", "}", ""]
    return "\n".join(lines)


def _plugin_packages(plugin_cfg: str) -> dict[str, str]:
    """plugin.cfg's ``directive:package`` lines; a bare package is one of CoreDNS's own."""
    packages = {}
    for line in plugin_cfg.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            name, package = line.split(":", 1)
            packages[name] = package if "/" in package else f"{_COREDNS_MODULE}/plugin/{package}"
    return packages


def _directives(zdirectives: str) -> list[str]:
    body = zdirectives.split("var Directives = []string{", 1)[1].split("}", 1)[0]
    return [word.strip().strip('",') for word in body.split() if word.strip().strip('",')]


def _build_coredns(go: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cilium-migrate-coredns-") as scratch:
        # Built inside the module's copy, so its own go.mod and go.sum pin every dependency
        # exactly as upstream's release does.
        source = _writable_module(go, _COREDNS_MODULE, COREDNS_VERSION,
                                  Path(scratch) / "coredns", what="CoreDNS")
        main = source / _COREDNS_MAIN_DIR / "main.go"
        main.parent.mkdir(parents=True)
        main.write_text(coredns_main(
            _directives((source / "core" / "dnsserver" / "zdirectives.go").read_text()),
            _plugin_packages((source / "plugin.cfg").read_text())))
        go_build(go, f"./{_COREDNS_MAIN_DIR}", coredns_path(), cwd=source,
                 what=f"CoreDNS {COREDNS_VERSION}")


def _fetch_busybox() -> None:
    if host_command("apt-get") is None or host_command("dpkg-deb") is None:
        raise ToolchainError(
            f"busybox {BUSYBOX_VERSION} is taken from Debian trixie with apt-get and dpkg-deb, "
            f"which this machine lacks; put a static busybox {BUSYBOX_VERSION} at "
            f"{busybox_path()}")
    with tempfile.TemporaryDirectory(prefix="cilium-migrate-busybox-") as scratch:
        root = Path(scratch)
        # Private apt state: the host's sources and installed packages stay as they are.
        (root / "sources.list").write_text(_BUSYBOX_APT_SOURCE + "\n")
        for directory in ("lists/partial", "cache/archives/partial"):
            (root / directory).mkdir(parents=True)
        apt = ["apt-get", "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
               "-o", "Dir::Etc::SourceParts=-", "-o", f"Dir::State::Lists={root / 'lists'}",
               "-o", f"Dir::Cache={root / 'cache'}", "-o", "APT::Sandbox::User=root"]
        _run([*apt, "update"], "`apt-get update` for Debian trixie")
        _run([*apt, "download", "busybox-static"], "`apt-get download busybox-static`",
             cwd=root)
        deb = next(root.glob("busybox-static_*.deb"))
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], "reading the busybox .deb")
        if not version.strip().startswith(f"1:{BUSYBOX_VERSION}."):
            raise ToolchainError(f"Debian trixie's busybox-static is {version.strip()}, not "
                                 f"{BUSYBOX_VERSION}; update BUSYBOX_VERSION in "
                                 "sandbox/nettools.py")
        _run(["dpkg-deb", "-x", str(deb), str(root / "unpacked")], "unpacking busybox")
        target = busybox_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name("busybox.partial")
        shutil.copyfile(root / "unpacked" / "usr" / "bin" / "busybox", staged)
        staged.chmod(0o755)
        staged.replace(target)


def _link_applets(busybox: Path) -> None:
    listed = subprocess.run([str(busybox), "--list"], stdout=subprocess.PIPE, text=True).stdout
    absent = sorted(set(APPLETS) - set(listed.split()))
    if absent:
        raise ToolchainError(f"{busybox} lacks the applets {', '.join(absent)}; install a "
                             "busybox built with them")
    directory = applets_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for applet in _applets_missing(busybox):
        staged = directory / f".{applet}.partial"
        staged.unlink(missing_ok=True)
        staged.symlink_to(busybox)
        staged.replace(directory / applet)  # atomic, and replaces a link to an old busybox


def ensure_network_tools(progress: Callable[[str], None] | None = None) -> NetworkTools:
    """Builds or fetches into the cache whatever is missing, installs missing host packages when
    root, and returns every path; idempotent, and returns at once when everything is there."""
    try:
        return find_network_tools()
    except ToolchainError:
        pass
    say = progress or (lambda message: None)
    with _cache_lock():
        _install_host_packages(say)
        steps = [
            (f"flanneld {FLANNEL_VERSION}", "about 2 minutes", _build_flanneld,
             flanneld_path().is_file()),
            (f"CNI plugins {CNI_PLUGINS_VERSION} and flannel {CNI_FLANNEL_VERSION}",
             "under a minute", _build_cni_plugins,
             all((cni_bin_dir() / p).is_file() for p in CNI_PLUGINS)),
            (f"agnhost {KUBERNETES_VERSION}", "about 2 minutes", _build_agnhost,
             agnhost_path().is_file()),
            (f"CoreDNS {COREDNS_VERSION}", "about 2 minutes", _build_coredns,
             coredns_path().is_file()),
        ]
        todo: list[tuple[str, Callable[[], None]]] = []
        if not busybox_path().is_file():
            todo.append((f"fetching busybox {BUSYBOX_VERSION} from Debian trixie", _fetch_busybox))
        builds = [(what, duration, build) for what, duration, build, done in steps if not done]
        if builds:
            go = go_binary()
            todo += [(f"building {what} (the first build takes {duration})", partial(build, go))
                     for what, duration, build in builds]
        for index, (doing, step) in enumerate(todo, 1):
            say(f"[{index}/{len(todo)}] {doing}")
            started = time.monotonic()
            step()
            say(f"[{index}/{len(todo)}] done in {time.monotonic() - started:.0f}s")
        _link_applets(busybox_path())
    return find_network_tools()
