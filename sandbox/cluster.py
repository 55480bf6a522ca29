"""`sandbox up`, `status` and `down`: a local cluster whose state lives in one directory.

``STATE_DIR`` holds everything: ``kubeconfig`` (admin), ``kubeconfigs/`` (one per client:
``worker.kubeconfig`` is the product's worker's own user), ``state.json`` (PIDs and ports),
``topology.json`` (the simulated nodes), ``pki/``, ``etcd/``, ``logs/`` (with the API server's
``audit.log``, see `sandbox.audit`), ``nodes/<node>/etc/cni/net.d`` and ``faults.yaml``; with
shared-kernel nodes also ``containers/`` and ``bin/docker``.
`down` stops the recorded processes and leaves the directory for post-mortems; `up --replace`
reuses a directory whose sandbox is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import BaseModel, ValidationError

from activities.kubeapi import Kube
from sandbox import pki
from sandbox.bootstrap import publish_api_server
from sandbox.controlplane import ControlPlane, ControlPlaneError, wait_healthy
from sandbox.nettools import find_network_tools, real_network_unsupported
from sandbox.network import underlay
from sandbox.network.netns import NetworkError
from sandbox.network.plan import choose_plan
from sandbox.processes import is_running, start_process, stop_process
from sandbox.toolchain import Toolchain, ToolchainError, find_toolchain
from sandbox.topology import CLUSTER_CIDR, Topology, node_cidr_mask

MANIFESTS = Path(__file__).parent / "manifests"
FLANNEL_BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"
SIMULATOR_MODULE = "sandbox.simulator"
# Stopped in this order: the simulator first (it writes through the API server), etcd last.
_STOP_ORDER = ("node-simulator", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
               "etcd")


class SandboxError(RuntimeError):
    """A sandbox cannot be started, inspected or stopped; the message says why and what to do."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cilium-migrate" / "sandbox"


_DAMAGED = "if that sandbox still runs, stop its processes by hand, then remove the file"


class SandboxState(BaseModel):
    cluster_name: str
    server: str
    pids: dict[str, int] = {}
    programs: dict[str, str] = {}  # what each PID must still be running to be ours
    ports: dict[str, int] = {}
    shared_kernel: bool = False  # nodes are containers on this machine's kernel, as with kind

    @classmethod
    def load(cls, state_dir: Path) -> SandboxState:
        path = state_dir / "state.json"
        if not path.exists():
            raise SandboxError(f"no sandbox in {state_dir} (no state.json); "
                               "start one with `cilium-migrate sandbox up`")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(map(str, problem["loc"]))
            raise SandboxError(f"{path} is damaged ({where + ': ' if where else ''}"
                               f"{problem['msg']}); {_DAMAGED}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise SandboxError(f"cannot read {path} ({error}); {_DAMAGED}") from None

    def save(self, state_dir: Path) -> None:
        (state_dir / "state.json").write_text(self.model_dump_json(indent=2))

    def running(self) -> dict[str, bool]:
        return {name: is_running(pid, self.programs[name]) for name, pid in self.pids.items()}


def _check_state_dir(state_dir: Path, replace: bool) -> None:
    if (state_dir / "state.json").exists():
        state = SandboxState.load(state_dir)
        alive = [name for name, up in state.running().items() if up]
        if alive:
            raise SandboxError(f"state dir {state_dir} is busy: a sandbox is running there "
                               f"({', '.join(alive)}); stop it with `cilium-migrate sandbox down "
                               f"--state-dir {state_dir}` or choose another --state-dir")
        if not replace:
            raise SandboxError(f"state dir {state_dir} holds a stopped sandbox; pass --replace "
                               "to start afresh there, or choose another --state-dir")
        _clean_up_network(state_dir)  # a crashed real-network sandbox may have left namespaces
        shutil.rmtree(state_dir)
    elif state_dir.exists() and any(state_dir.iterdir()):
        raise SandboxError(f"state dir {state_dir} is not empty and holds no sandbox; "
                           "choose an empty or new directory")


def up(state_dir: Path, nodes: int, control_planes: int = 1, zones: int = 1,
       cluster_name: str = "sandbox", replace: bool = False,
       simulator_args: tuple[str, ...] = (), timeout: float | None = None,
       flannel_manifest: Path | None = None, shared_kernel: bool = False,
       network: str = "simulated", topology: Topology | None = None,
       progress: Callable[[str], None] = lambda message: None) -> SandboxState:
    """Starts a sandbox and returns once every node is Ready and flannel runs everywhere.

    ``flannel_manifest`` replaces the bundled upstream manifest, e.g. with an older layout.
    ``shared_kernel`` makes the nodes play kind's node containers: a reboot keeps the bootID and
    restarts the node's container, which ``STATE_DIR/bin/docker`` restarts and inspects.
    ``network="real"`` makes nodes and pods network namespaces with real flanneld, CNI plugins
    and packets (Linux, root; see `sandbox.simulator.real_datapath`).
    ``topology`` gives the nodes themselves (names, zones, labels, taints, sizes), as a
    rehearsal shapes them after a snapshot; ``nodes``, ``control_planes`` and ``zones`` are
    then read from it.
    """
    if topology is not None:
        nodes = len(topology.nodes)
        control_planes = sum(n.control_plane for n in topology.nodes)
        zones = len({n.zone for n in topology.nodes}) or 1
    if nodes < 1:
        raise SandboxError(f"--nodes must be at least 1 (got {nodes})")
    if control_planes < 0:
        raise SandboxError(f"--control-planes must be 0 or more (got {control_planes})")
    if zones < 1:
        raise SandboxError(f"--zones must be at least 1 (got {zones})")
    if control_planes > nodes:
        raise SandboxError(f"--control-planes ({control_planes}) cannot exceed --nodes ({nodes})")
    if flannel_manifest is not None and not flannel_manifest.is_file():
        raise SandboxError(f"--flannel-manifest {flannel_manifest}: no such file")
    if network not in ("simulated", "real"):
        raise SandboxError(f"--network must be simulated or real (got {network})")
    if network == "real":
        problem = real_network_unsupported()
        if problem is not None:
            raise SandboxError(f"--network real cannot run here: {problem}")
        try:
            find_network_tools()
        except ToolchainError as error:
            raise SandboxError(str(error)) from error
    try:
        toolchain = find_toolchain()
    except ToolchainError as error:
        raise SandboxError(str(error)) from error
    state_dir = state_dir.resolve()
    _check_state_dir(state_dir, replace)
    state_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    if topology is None:
        topology = Topology.generate(workers=nodes - control_planes,
                                     control_planes=control_planes, zones=zones)
    if network == "real":
        for leftover in _clean_up_dead_real_networks():
            progress(f"removed what a stopped real-network sandbox left on this host: {leftover}")
        try:
            plan = choose_plan(state_dir, [n.name for n in topology.nodes], [CLUSTER_CIDR])
        except NetworkError as error:
            raise SandboxError(str(error)) from error
        topology = topology.on_underlay(plan)
        _own_real_network(plan.prefix, state_dir)
    topology.save(state_dir / "topology.json")
    control_plane = ControlPlane(state_dir, toolchain, cluster_name,
                                 node_cidr_mask=node_cidr_mask(len(topology.nodes)),
                                 **({"advertise_address": topology.network.gateway}
                                    if topology.network else {}))
    state = SandboxState(cluster_name=cluster_name, server="", shared_kernel=shared_kernel)
    if shared_kernel:
        simulator_args = (*simulator_args, "--shared-kernel")
        write_docker_shim(state_dir)
    try:
        progress("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        try:
            control_plane.start()
        finally:  # record whatever started, so `down` can stop it even after a failure
            state.pids.update(control_plane.pids)
            state.programs.update({name: str(toolchain[name]) for name in control_plane.pids})
            state.ports, state.server = control_plane.ports, control_plane.server
            state.save(state_dir)
        topology.api_server = control_plane.node_address
        topology.save(state_dir / "topology.json")  # before the simulator reads it
        progress(f"publishing the API server address for nodes ({control_plane.node_address})")
        try:
            publish_api_server(Kube(str(state_dir / "kubeconfig")), control_plane.node_address,
                               control_plane.pki.ca_cert)
        except ApiException as error:
            raise SandboxError(f"cannot publish the API server address: {error.status} "
                               f"{error.reason} {error.body}") from error
        progress(f"starting the node simulator for {nodes} nodes")
        state.pids["node-simulator"] = start_process("node-simulator", [
            sys.executable, "-m", SIMULATOR_MODULE, "--state-dir", str(state_dir),
            *simulator_args], state_dir / "logs")
        state.programs["node-simulator"] = SIMULATOR_MODULE
        state.save(state_dir)
        progress("installing flannel and the cluster add-ons (kube-proxy, CoreDNS)")
        for manifest in (flannel_manifest or MANIFESTS / "kube-flannel.yml",
                         MANIFESTS / "cluster-addons.yaml"):
            kubectl(toolchain, state_dir, "apply", "--server-side", "-f", str(manifest))
        _wait_until_ready(state_dir, nodes, timeout or 120.0 + nodes, progress)
    except (SandboxError, ControlPlaneError) as error:
        down(state_dir)
        raise SandboxError(f"{error} (logs in {state_dir / 'logs'})") from error
    progress(f"sandbox ready in {time.monotonic() - started:.1f}s: "
             f"export KUBECONFIG={state_dir / 'kubeconfig'}")
    return state


def worker_kubeconfig(state_dir: Path) -> Path:
    """The kubeconfig of the product's worker: its own user, told apart in the audit log."""
    return state_dir / "kubeconfigs" / f"{pki.WORKER.file_stem}.kubeconfig"


def docker_shim(state_dir: Path) -> Path:
    return state_dir / "bin" / "docker"


def write_docker_shim(state_dir: Path) -> Path:
    """``STATE_DIR/bin/docker``: `sandbox.docker_shim` bound to this sandbox, run by this Python
    with this checkout's modules, so a worker can call it by path or find it first on PATH."""
    path = docker_shim(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    path.write_text(f"#!{sys.executable}\n"
                    "# docker for the shared-kernel sandbox in this directory's parent\n"
                    "import sys\n"
                    f"sys.path.insert(0, {str(root)!r})\n"
                    "from pathlib import Path\n"
                    "from sandbox.docker_shim import main\n"
                    f"sys.exit(main(Path({str(state_dir)!r}), sys.argv[1:]))\n")
    path.chmod(0o755)
    return path


def kubectl(toolchain: Toolchain, state_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [str(toolchain["kubectl"]), "--kubeconfig", str(state_dir / "kubeconfig"), *args],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _summary(kube: Kube) -> dict[str, Any]:
    node_items = kube.get("/api/v1/nodes")["items"]
    # Ready, and the node lifecycle controller has caught up (lifted its not-ready taint), so
    # the scheduler and anyone reading the nodes right after `up` see them as usable.
    ready = [n["metadata"]["name"] for n in node_items if any(
        c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        and not any(t["key"].startswith("node.kubernetes.io/") for t in
                    n.get("spec", {}).get("taints") or [])]
    flannel = [p for p in kube.get("/api/v1/pods", labelSelector="app=flannel")["items"]
               if p.get("status", {}).get("phase") == "Running"]
    # flanneld annotates its Node once it holds the node's lease and set up its VTEP (a real
    # flanneld does so a moment after its pod runs).
    registered = [n for n in node_items if FLANNEL_BACKEND_DATA in (
        n["metadata"].get("annotations") or {})]
    return {"nodes": len(node_items), "ready": len(ready), "flannel_running": len(flannel),
            "flannel_registered": len(registered)}


def _wait_until_ready(state_dir: Path, nodes: int, timeout: float,
                      progress: Callable[[str], None]) -> None:
    kube = Kube(str(state_dir / "kubeconfig"))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        summary = _summary(kube)
        line = (f"nodes Ready {summary['ready']}/{nodes}, "
                f"flannel Running {summary['flannel_running']}/{nodes}, "
                f"registered {summary['flannel_registered']}/{nodes}")
        if line != last:
            progress(line)
            last = line
        if summary["ready"] == summary["flannel_running"] == summary[
                "flannel_registered"] == nodes:
            return
        time.sleep(0.5)
    raise SandboxError(f"sandbox not ready after {timeout:.0f}s: {last}")


def status(state_dir: Path) -> dict[str, Any]:
    state = SandboxState.load(state_dir.resolve())
    report: dict[str, Any] = {
        "state_dir": str(state_dir.resolve()), "server": state.server,
        "kubeconfig": str(state_dir.resolve() / "kubeconfig"),
        "processes": {name: {"pid": state.pids[name], "running": up}
                      for name, up in state.running().items()},
    }
    if state.shared_kernel:
        report["docker"] = str(docker_shim(state_dir.resolve()))
    report["network"] = _network_report(state_dir.resolve())
    if report["processes"].get("kube-apiserver", {}).get("running"):
        try:
            report["cluster"] = _summary(Kube(report["kubeconfig"]))
        except Exception as error:  # noqa: BLE001 - status must report, not crash
            report["cluster"] = {"error": str(error)}
    return report


def down(state_dir: Path) -> list[str]:
    """Stops every process this sandbox recorded; returns the names of those it stopped."""
    state = SandboxState.load(state_dir.resolve())
    stopped = []
    for name in _STOP_ORDER:
        if name in state.pids and stop_process(state.pids[name], state.programs[name]):
            stopped.append(name)
    _clean_up_network(state_dir.resolve())
    return stopped


def crash_and_restart(state_dir: Path, components: list[str], down_seconds: float = 0.0,
                      timeout: float = 120.0) -> None:
    """Kills ``components`` (e.g. etcd, kube-apiserver) as a crash would (SIGKILL), keeps them
    down ``down_seconds``, and starts each again, in the order given, with the command line it
    ran and its data kept: what a control-plane machine's restart does to its clients. Returns
    once the API server answers /readyz again."""
    state_dir = state_dir.resolve()
    state = SandboxState.load(state_dir)
    commands = {}
    for name in components:
        pid = state.pids.get(name)
        if pid is None or not is_running(pid, state.programs[name]):
            raise SandboxError(f"{name} is not running in {state_dir}")
        commands[name] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        os.kill(pid, signal.SIGKILL)
    for name in components:
        while is_running(state.pids[name], state.programs[name]):
            time.sleep(0.05)
    time.sleep(down_seconds)
    for name in components:
        state.pids[name] = start_process(name, [a.decode() for a in commands[name]],
                                         state_dir / "logs")
    state.save(state_dir)
    paths = pki.PkiPaths(state_dir / "pki")
    context = ssl.create_default_context(cafile=str(paths.ca_cert))
    context.load_cert_chain(str(paths.client_cert(pki.ADMIN)), str(paths.client_key(pki.ADMIN)))
    wait_healthy(f"{state.server}/readyz", "kube-apiserver",
                 state_dir / "logs" / "kube-apiserver.log", timeout, context)


def _topology(state_dir: Path) -> Topology | None:
    try:
        return Topology.load(state_dir / "topology.json")
    except (OSError, ValueError):
        return None


def _clean_up_network(state_dir: Path) -> None:
    """Removes what a real-network sandbox made on this machine (namespaces, links, routes);
    the simulator does it when it stops, this covers a simulator that crashed."""
    topology = _topology(state_dir)
    if topology is not None and topology.network is not None:
        underlay.clean_up_prefix(topology.network.prefix)
        (REAL_NETWORK_OWNERS / topology.network.prefix).unlink(missing_ok=True)


# Which state dir made the namespaces, links and routes of each real-network prefix: one file
# per prefix, holding the state dir. On tmpfs, like the namespaces, so a host reboot clears both.
REAL_NETWORK_OWNERS = Path("/run/cilium-migrate/real-network")


def _own_real_network(prefix: str, state_dir: Path) -> None:
    REAL_NETWORK_OWNERS.mkdir(parents=True, exist_ok=True)
    (REAL_NETWORK_OWNERS / prefix).write_text(str(state_dir))


def _clean_up_dead_real_networks() -> list[str]:
    """Removes the leftovers of real-network sandboxes none of whose processes still run (a
    crashed test or a killed `up`), so that they do not hold the pod ranges forever; a sandbox
    still running is left alone (and `choose_plan` names it)."""
    cleaned = []
    owners = sorted(REAL_NETWORK_OWNERS.iterdir()) if REAL_NETWORK_OWNERS.is_dir() else []
    for owner in owners:
        state_dir = Path(owner.read_text().strip())
        try:
            alive = any(SandboxState.load(state_dir).running().values())
        except (SandboxError, OSError, ValueError):
            alive = False  # its directory is gone or unreadable: nothing can stop it any more
        if not alive:
            underlay.clean_up_prefix(owner.name)
            owner.unlink(missing_ok=True)
            cleaned.append(f"{owner.name} (from {state_dir})")
    return cleaned


def _network_report(state_dir: Path) -> dict[str, str]:
    topology = _topology(state_dir)
    if topology is None or topology.network is None:
        return {"mode": "simulated", "cilium_datapath": "none: connectivity is derived"}
    return {"mode": "real", "underlay": topology.network.underlay,
            "api_server_for_nodes": topology.network.gateway,
            "cilium_datapath": "kernel stand-in (cilium_vxlan, routes, ptp), "
                               "not Cilium's eBPF agent"}


def describe(report: dict[str, Any]) -> str:
    lines = [f"state dir   {report['state_dir']}", f"kubeconfig  {report['kubeconfig']}",
             f"server      {report['server']}"]
    if "docker" in report:
        lines.append(f"docker      {report['docker']} (nodes are containers: shared kernel)")
    network = report.get("network") or {}
    if network.get("mode") == "real":
        lines.append(f"network     real: underlay {network['underlay']}, Cilium datapath: "
                     f"{network['cilium_datapath']}")
    elif network:
        lines.append("network     simulated (pod IPs are data; connectivity is derived)")
    for name, process in report["processes"].items():
        lines.append(f"{name:<24} pid {process['pid']:<8} "
                     f"{'running' if process['running'] else 'stopped'}")
    cluster = report.get("cluster")
    if cluster and "error" not in cluster:
        lines.append(f"nodes Ready {cluster['ready']}/{cluster['nodes']}, "
                     f"flannel Running {cluster['flannel_running']}")
    elif cluster:
        lines.append(f"cluster unreachable: {cluster['error']}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
