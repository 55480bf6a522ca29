"""The container runtime's CNI side: the simulator runs the real CNI plugins, as containerd does
through libcni, to give each pod namespace its interface and IP.

What it plays, and after which upstream source:

- The active config is the lexically first `*.conf`/`*.conflist`/`*.json` file of the CNI dir
  that loads; a single-plugin `.conf`/`.json` is wrapped as a one-plugin list. libcni
  `ConfFiles`, `ConfListFromConf`; containerd go-cni `loadFromConfDir` (sorted names). Not
  played: go-cni fails the whole load on a bad file (keeping the config it had); a bad file is
  skipped here, as kubelet's dockershim `getDefaultCNINetwork` did.
- ADD runs the list's plugins in order, each given the list's `name` and `cniVersion` and the
  previous result as `prevResult`; the last result is cached with the config, CNI_ARGS and
  capability args. libcni `AddNetworkList`, `buildOneConfig`, `cacheAdd`
  (`results/<net>-<id>-<ifname>`, kind `cniCacheV1`). Not played: several networks per pod.
- `runtimeConfig` carries only the capability args a plugin declares. libcni
  `injectRuntimeConfig`.
- DEL runs the cached config's plugins in reverse with the cached args; from cniVersion 0.4.0
  the cached result is `prevResult`; the cache goes once DEL succeeded. libcni
  `DelNetworkList`, `getCachedConfig` (CRI-O deletes with the cached config).
- CHECK needs cniVersion >= 0.4.0 and is skipped with `disableCheck`. libcni `CheckNetworkList`.
- A failed ADD is torn down with DEL before the error is returned. containerd CRI
  `RunPodSandbox` (deferred `teardownPodNetwork`).
- A plugin's error is its `{code, msg, details}` on stdout, else its stderr. libcni
  `RawExec.pluginErr`, `types.Error`.
- Plugins get `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`
  (`K=V;...`) and `CNI_PATH` on top of the runtime's environment, and are run again on "text
  file busy". CNI SPEC.md "Parameters"; libcni `Args.AsEnv`, `RawExec.ExecPlugin`.
- Given CNI_ARGS (the pod's `K8S_POD_*` labels) come with `IgnoreUnknown=1`, without which the
  plugins refuse keys they do not know. containerd CRI `toCNILabels`.

Nodes share one machine, so each node's plugin state is moved under its root at execution time
(never in the files on disk): the flannel plugin's `subnetFile` and `dataDir`, host-local's
`dataDir`, and the result cache. flannel v0.9.1 builds its delegate's IPAM from its own `ipam`
key (`getDelegateIPAM`: that map, `type` defaulting to host-local, `ranges`/`routes` replaced)
and refuses an `ipam` inside `delegate`, so host-local's `dataDir` goes into the flannel plugin's
`ipam`. Host-side links land in the namespace the plugin runs in: the node's namespace.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.network import netns as ns

CONF_SUFFIXES = (".conf", ".conflist", ".json")
SUPPORTED_VERSION = (1, 1, 0)  # the newest spec version this runtime knows, as libcni's Current()
CACHE_KIND = "cniCacheV1"

# The paths a real node uses; each is re-rooted under the node's root.
FLANNEL_SUBNET_FILE = "/run/flannel/subnet.env"
FLANNEL_DATA_DIR = "/var/lib/cni/flannel"
HOST_LOCAL_DATA_DIR = "/var/lib/cni/networks"
CACHE_DIR = "/var/lib/cni/results"

PLUGIN_TIMEOUT = 60.0
_BUSY_RETRIES = 5

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # libcni utils.ValidateContainerID


class CniError(Exception):
    """A CNI operation failed; the message names the plugin and gives its error text."""

    def __init__(self, message: str, plugin: str | None = None, code: int | None = None,
                 msg: str = "", details: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details


@dataclass(frozen=True)
class CniConfig:
    file: str  # the file it came from, e.g. "10-flannel.conflist"
    network: dict[str, Any]  # the normalised conflist: {"cniVersion", "name", "plugins": [...]}

    @property
    def name(self) -> str:
        return str(self.network["name"])

    @property
    def cni_version(self) -> str:
        return str(self.network.get("cniVersion", ""))


@dataclass(frozen=True)
class CniResult:
    ip: str  # the first IPv4 address, without prefix
    gateway: str | None
    raw: dict[str, Any]


def load_config(path: Path) -> CniConfig:
    """Loads one config file as libcni does; raises CniError when it does not load."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CniError(f"error reading {path.name}: {error}") from error
    if not isinstance(data, dict):
        raise CniError(f"{path.name}: not a JSON object")
    if path.suffix == ".conflist":
        network = dict(data)
    else:
        # A conflist put into a .conf has no type (go-cni's check).
        if not _nonempty_str(data.get("type")):
            raise CniError(f"{path.name}: network type not found")
        network = {"name": data.get("name"), "cniVersion": data.get("cniVersion", ""),
                   "plugins": [data]}
    if not _nonempty_str(network.get("name")):
        raise CniError(f"{path.name}: no name")
    network["cniVersion"] = _effective_version(path.name, network)
    plugins = network.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniError(f"{path.name}: no plugins in list")
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not _nonempty_str(plugin.get("type")):
            raise CniError(f"{path.name}: plugin {index} has no type")
    return CniConfig(file=path.name, network=network)


def active_config(conf_dir: Path) -> CniConfig | None:
    """The lexically first config of ``conf_dir`` that loads (``*.cilium_bak`` never counts)."""
    if not conf_dir.is_dir():
        return None
    for path in sorted(conf_dir.iterdir(), key=lambda p: p.name):
        if path.suffix not in CONF_SUFFIXES or path.is_dir():
            continue
        with contextlib.suppress(CniError):
            return load_config(path)
    return None


def create_pod_netns(name: str) -> Path:
    """A pod sandbox's namespace with `lo` up (what containerd's loopback network does)."""
    ns.create(name)
    return ns.path(name)


def delete_pod_netns(name: str) -> None:
    ns.delete(name)


class CniRuntime:
    """Runs CNI plugins from ``plugin_dir`` for one node whose "/" is ``node_root``, inside
    the node's namespace ``node_netns`` (the current one when None)."""

    def __init__(self, plugin_dir: Path, node_root: Path, node_netns: str | None = None) -> None:
        self.plugin_dir = plugin_dir
        self.node_root = node_root
        self.node_netns = node_netns

    @property
    def cache_dir(self) -> Path:
        return self.rooted(CACHE_DIR)

    def rooted(self, host_path: str) -> Path:
        """A path as the node sees it, mapped under its root."""
        return self.node_root / host_path.lstrip("/")

    def add(self, config: CniConfig, container_id: str, netns: Path, ifname: str = "eth0",
            cni_args: Mapping[str, str] | None = None,
            capability_args: Mapping[str, Any] | None = None) -> CniResult:
        network = config.network
        _validate(container_id, config.name, ifname)
        args = list((cni_args or {}).items())
        if args and "IgnoreUnknown" not in dict(args):
            args.insert(0, ("IgnoreUnknown", "1"))
        caps = dict(capability_args or {})
        result: dict[str, Any] | None = None
        try:
            for plugin in network["plugins"]:
                result = self._run(network, plugin, "ADD", container_id, str(netns), ifname,
                                   args, caps, result)
            if result is None:
                raise CniError(f"network {config.name}: the plugins returned no result")
            parsed = _parse_result(result)
        except CniError:
            self._delete_list(network, container_id, str(netns), ifname, args, caps, None,
                              best_effort=True)
            raise
        self._write_cache(network, container_id, str(netns), ifname, args, caps, result)
        return parsed

    def delete(self, container_id: str, netns: Path | None, ifname: str = "eth0") -> None:
        """DEL with the config cached at ADD; nothing cached means nothing to undo. A gone
        ``netns`` is passed as empty, which plugins take as "only release what is held"."""
        for cache_file, cached in self._cached(container_id, ifname):
            network = _cached_network(cache_file, cached)
            prev = cached.get("result") if _at_least(network, (0, 4, 0)) else None
            path = str(netns) if netns is not None and netns.exists() else ""
            self._delete_list(network, container_id, path, ifname,
                              [tuple(pair) for pair in cached.get("cniArgs") or []],
                              cached.get("capabilityArgs") or {}, prev)
            cache_file.unlink(missing_ok=True)

    def check(self, container_id: str, netns: Path, ifname: str = "eth0") -> None:
        """CHECK of the cached network; raises CniError when a plugin finds a difference."""
        entries = self._cached(container_id, ifname)
        if not entries:
            raise CniError(f"no network cached for container {container_id} {ifname}")
        for cache_file, cached in entries:
            network = _cached_network(cache_file, cached)
            if not _at_least(network, (0, 4, 0)):
                raise CniError(f"configuration version {network.get('cniVersion')!r} does not "
                               "support the CHECK command")
            if _truthy(network.get("disableCheck")):
                continue
            args = [tuple(pair) for pair in cached.get("cniArgs") or []]
            for plugin in network["plugins"]:
                self._run(network, plugin, "CHECK", container_id, str(netns), ifname, args,
                          cached.get("capabilityArgs") or {}, cached.get("result"))

    def _delete_list(self, network: dict[str, Any], container_id: str, netns: str, ifname: str,
                     args: list[Any], caps: dict[str, Any], prev: dict[str, Any] | None,
                     best_effort: bool = False) -> None:
        """libcni stops at the first failing plugin; a clean-up after a failed ADD goes on, since
        nobody retries it later (containerd would, when the sandbox is removed)."""
        for plugin in reversed(network["plugins"]):
            try:
                self._run(network, plugin, "DEL", container_id, netns, ifname, args, caps, prev)
            except CniError:
                if not best_effort:
                    raise

    def _run(self, network: dict[str, Any], plugin: dict[str, Any], command: str,
             container_id: str, netns: str, ifname: str, args: list[Any], caps: dict[str, Any],
             prev: dict[str, Any] | None) -> dict[str, Any] | None:
        conf = self._plugin_conf(network, plugin, caps, prev)
        kind = str(plugin["type"])
        what = f"plugin type={kind!r} failed ({command.lower()})"
        binary = self.plugin_dir / kind
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise CniError(f"{what}: failed to find plugin {kind!r} in path [{self.plugin_dir}]",
                           plugin=kind)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns,
                   CNI_IFNAME=ifname, CNI_ARGS=";".join(f"{k}={v}" for k, v in args),
                   CNI_PATH=str(self.plugin_dir))
        proc = self._exec(binary, json.dumps(conf), env, what, kind)
        if proc.returncode != 0:
            raise _plugin_error(what, kind, proc)
        if command != "ADD":
            return None
        try:
            result = json.loads(proc.stdout)
        except ValueError as error:
            raise CniError(f"{what}: unparsable result {proc.stdout.strip()!r}: {error}",
                           plugin=kind) from error
        if not isinstance(result, dict):
            raise CniError(f"{what}: result is not a JSON object", plugin=kind)
        return result

    def _exec(self, binary: Path, stdin: str, env: dict[str, str], what: str,
              kind: str) -> subprocess.CompletedProcess[str]:
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                if self.node_netns:
                    proc = ns.run_in(self.node_netns, [str(binary)], env=env, stdin=stdin,
                                     timeout=PLUGIN_TIMEOUT)
                else:
                    proc = subprocess.run([str(binary)], input=stdin, env=env, text=True,
                                          capture_output=True, timeout=PLUGIN_TIMEOUT)
            except subprocess.TimeoutExpired as error:
                raise CniError(f"{what}: no answer in {PLUGIN_TIMEOUT:.0f}s", plugin=kind) \
                    from error
            except OSError as error:
                if error.errno == errno.ETXTBSY and attempt < _BUSY_RETRIES:
                    time.sleep(1)
                    continue
                raise CniError(f"{what}: {error}", plugin=kind) from error
            # A plugin binary being written (the tool cache filling) is worth waiting for.
            busy = "text file busy" in proc.stderr.lower() and not proc.stdout.strip()
            if proc.returncode != 0 and busy and attempt < _BUSY_RETRIES:
                time.sleep(1)
                continue
            return proc
        raise AssertionError("unreachable")

    def _plugin_conf(self, network: dict[str, Any], plugin: dict[str, Any], caps: dict[str, Any],
                     prev: dict[str, Any] | None) -> dict[str, Any]:
        conf = json.loads(json.dumps(plugin))  # deep copy: the config is never changed
        conf["name"] = network["name"]
        conf["cniVersion"] = network.get("cniVersion", "")
        if prev is not None:
            conf["prevResult"] = prev
        declared = conf.get("capabilities") if isinstance(conf.get("capabilities"), dict) else {}
        runtime = {cap: caps[cap] for cap, on in declared.items() if on and cap in caps}
        if runtime:
            conf["runtimeConfig"] = runtime
        self._localise(conf)
        return conf

    def _localise(self, conf: dict[str, Any]) -> None:
        """Moves the node-wide state paths of known plugins under the node's root."""
        if conf["type"] == "flannel":
            conf["subnetFile"] = str(self.rooted(conf.get("subnetFile") or FLANNEL_SUBNET_FILE))
            conf["dataDir"] = str(self.rooted(conf.get("dataDir") or FLANNEL_DATA_DIR))
            ipam = conf.get("ipam")
            ipam = ipam if isinstance(ipam, dict) else {}
            if ipam.get("type", "host-local") == "host-local":  # flannel's default delegate IPAM
                conf["ipam"] = self._host_local(ipam)
        elif isinstance(conf.get("ipam"), dict) and conf["ipam"].get("type") == "host-local":
            conf["ipam"] = self._host_local(conf["ipam"])

    def _host_local(self, ipam: dict[str, Any]) -> dict[str, Any]:
        return {**ipam, "dataDir": str(self.rooted(ipam.get("dataDir") or HOST_LOCAL_DATA_DIR))}

    def _write_cache(self, network: dict[str, Any], container_id: str, netns: str, ifname: str,
                     args: list[Any], caps: dict[str, Any], result: dict[str, Any]) -> None:
        cached = {"kind": CACHE_KIND, "containerId": container_id,
                  "config": base64.b64encode(json.dumps(network).encode()).decode(),
                  "ifName": ifname, "networkName": network["name"], "netns": netns,
                  "cniArgs": [list(pair) for pair in args] or None,
                  "capabilityArgs": caps or None, "result": result}
        path = self.cache_dir / f"{network['name']}-{container_id}-{ifname}"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({k: v for k, v in cached.items() if v is not None}))
        tmp.replace(path)

    def _cached(self, container_id: str, ifname: str) -> list[tuple[Path, dict[str, Any]]]:
        """The cache entries of one attachment, whatever network they were for."""
        if not self.cache_dir.is_dir():
            return []
        found = []
        for path in sorted(self.cache_dir.glob(f"*-{container_id}-{ifname}")):
            try:
                cached = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if (isinstance(cached, dict) and cached.get("kind") == CACHE_KIND
                    and cached.get("containerId") == container_id
                    and cached.get("ifName") == ifname):
                found.append((path, cached))
        return found


def _cached_network(cache_file: Path, cached: dict[str, Any]) -> dict[str, Any]:
    try:
        network = json.loads(base64.b64decode(cached["config"], validate=True))
        if not isinstance(network, dict) or not isinstance(network.get("plugins"), list):
            raise ValueError("no plugin list")
    except (KeyError, TypeError, ValueError) as error:
        raise CniError(f"cached config {cache_file} is unusable: {error}") from error
    return network


def _plugin_error(what: str, kind: str, proc: subprocess.CompletedProcess[str]) -> CniError:
    stdout, stderr = proc.stdout.strip(), proc.stderr.strip()
    code: int | None = None
    msg = details = ""
    if not stdout:
        msg = (f"netplugin failed: {stderr!r} (exit {proc.returncode})" if stderr
               else f"netplugin failed with no error message (exit {proc.returncode})")
    else:
        try:
            error = json.loads(stdout)
            code = error.get("code")
            msg, details = str(error.get("msg", "")), str(error.get("details", "") or "")
        except (ValueError, AttributeError):
            msg = f"netplugin failed but error parsing its diagnostic message {stdout!r}"
    text = f"{what}: {msg}" + (f"; {details}" if details else "")
    return CniError(text, plugin=kind, code=code, msg=msg, details=details)


def _parse_result(result: dict[str, Any]) -> CniResult:
    """The first IPv4 address of a 0.3.0+ result (``ips``) or a 0.1/0.2 one (``ip4``)."""
    for entry in result.get("ips") or []:
        address = str(entry.get("address", ""))
        if "." in address:
            return CniResult(address.split("/", 1)[0], entry.get("gateway"), result)
    ip4 = result.get("ip4")
    if isinstance(ip4, dict) and ip4.get("ip"):
        return CniResult(str(ip4["ip"]).split("/", 1)[0], ip4.get("gateway"), result)
    raise CniError(f"the network's result has no IPv4 address: {json.dumps(result)}")


def _validate(container_id: str, network: str, ifname: str) -> None:
    """libcni's checks before ADD (utils.ValidateContainerID, ValidateNetworkName,
    ValidateInterfaceName)."""
    if not _ID_RE.match(container_id):
        raise CniError(f"invalid container ID {container_id!r}")
    if not _ID_RE.match(network):
        raise CniError(f"invalid network name {network!r}")
    if (not ifname or len(ifname) > 15 or ifname in (".", "..")
            or any(c in ifname for c in "/:") or any(c.isspace() for c in ifname)):
        raise CniError(f"invalid interface name {ifname!r}")


def _version(text: str) -> tuple[int, int, int]:
    if not text:
        return (0, 1, 0)  # the spec's version when a config gives none
    parts = text.split(".")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {text!r}")
    major, minor, patch = ([int(p) for p in parts] + [0, 0])[:3]
    return (major, minor, patch)


def _effective_version(file: str, network: dict[str, Any]) -> str:
    """``cniVersion``, or the newest supported of ``cniVersions`` and it (libcni 1.1)."""
    version = network.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(f"{file}: invalid cniVersion {version!r}")
    versions = network.get("cniVersions")
    if versions is None:
        return version
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise CniError(f"{file}: invalid cniVersions")
    try:
        usable = [v for v in [*versions, *([version] if version else [])]
                  if _version(v) <= SUPPORTED_VERSION]
    except ValueError as error:
        raise CniError(f"{file}: {error}") from error
    return max(usable, key=_version) if usable else version


def _at_least(network: dict[str, Any], version: tuple[int, int, int]) -> bool:
    try:
        return _version(str(network.get("cniVersion", ""))) >= version
    except ValueError:
        return False


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""
