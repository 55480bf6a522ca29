"""`cilium-migrate demo`: the whole product on this machine, driven the way an operator would.

It starts a Temporal dev server with a worker (`cilium-migrate dev`), a sandbox cluster with
sample workloads and PodDisruptionBudgets, then runs a migration with per-wave approvals,
approving each gate by running the same `cilium-migrate approve` command a human would (and
printing it). At the end the dev server and the sandbox stay up, so the Web UI link it prints
can be opened and `history export` run, until Ctrl-C (`--no-wait`, or a stdin that is not a
terminal, stops them at once). Everything it started is stopped then, also on an earlier Ctrl-C.
`demo --fleet` does the same for a fleet of three sandboxes (client/fleet_demo.py, built on the
helpers here).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from client import argument_types, exit_codes
from client.errors import CommandError
from sandbox import cluster
from sandbox.cilium_release import ensure_default_release
from sandbox.toolchain import Toolchain, ensure_toolchain, print_progress

CLUSTER = "demo"


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = groups.add_parser("demo", help="run a whole migration on a local sandbox")
    demo.add_argument("--workers", type=argument_types.positive, help="worker nodes of the "
                      "sandbox (default: 4; with --fleet: 2 in each sandbox)")
    demo.add_argument("--fleet", action="store_true", help="a fleet instead: three sandboxes "
                      "(dev, staging, prod) migrated stage after stage, each by a worker of its "
                      "own (client/fleet_demo.py)")
    demo.add_argument("--port", type=argument_types.port, default=7233,
                      help="Temporal dev server port")
    demo.add_argument("--dir", type=Path, help="where the demo keeps its state (default: a "
                      "new temporary directory)")
    demo.add_argument("--no-wait", action="store_true", help="stop the dev server and the "
                      "sandbox as soon as the migration ends (default when stdin is no terminal)")
    demo.set_defaults(run=_demo)


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "client.cli", *args]


def say(text: str) -> None:
    print(text, flush=True)


def sample_workloads(directory: Path) -> Path:
    """Two apps spread over the workers, each with a PDB that allows one disruption."""
    documents: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": "shop"}}]
    for app, replicas in (("web", 6), ("api", 3)):
        documents.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}}, "spec": {
                         "terminationGracePeriodSeconds": 5,
                         "topologySpreadConstraints": [{
                             "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                             "whenUnsatisfiable": "ScheduleAnyway",
                             "labelSelector": {"matchLabels": {"app": app}}}],
                         "containers": [{"name": app, "image": "nginx:1.27"}]}}}})
        documents.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": f"{app}-pdb", "namespace": "shop"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}}})
    path = directory / "workloads.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def _spec(directory: Path, chart: Path) -> Path:
    spec = {
        "cluster": {"name": CLUSTER},
        "cilium": {"chart": {"path": str(chart)}},
        "rollout": {"maxUnavailable": 2},
        "approvals": {"policy": "per-wave"},
        "drain": {"timeout": "5m"},
        "reboot": {"timeout": "5m"},
    }
    path = directory / "migration.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _demo(args: argparse.Namespace) -> int:
    if args.fleet:
        # Imported here: the fleet demo builds on this module's helpers.
        from client.fleet_demo import fleet_demo

        return fleet_demo(args)
    directory = demo_directory(args.dir)
    started = time.monotonic()
    toolchain = ensure_toolchain(print_progress)
    release = ensure_default_release(toolchain["helm"], print_progress)
    state_dir = directory / "sandbox"
    address = ("--address", f"localhost:{args.port}")
    workers = args.workers or 4
    dev: subprocess.Popen[bytes] | None = None
    ended = False
    interrupt_on_sigterm()
    try:
        say(f"== sandbox: 1 control plane + {workers} workers in 2 zones ({state_dir})")
        cluster.up(state_dir, nodes=workers + 1, control_planes=1, zones=2,
                   replace=True, simulator_args=("--reboot-seconds", "2"),
                   progress=print_progress)
        apply_workloads(toolchain, state_dir, directory)
        say("== Temporal dev server and worker: cilium-migrate dev")
        dev = start_dev_server(directory, args.port, toolchain,
                               {CLUSTER: state_dir / "kubeconfig"})
        wait_for_server(address, dev)
        spec = _spec(directory, release.chart_dir)
        run_shown(["plan", "-f", str(spec), "--kubeconfig", str(state_dir / "kubeconfig"),
                   "--helm", str(toolchain["helm"])])
        run_shown(["start", "-f", str(spec), *address])
        _approve_until_done(address)
        run_shown(["status", CLUSTER, *address])
        say(f"\nDone in {time.monotonic() - started:.0f}s. Web UI: "
            f"http://localhost:{args.port + 1000}/namespaces/default/workflows/"
            f"cilium-migrate%2F{CLUSTER}")
        say(f"History for a post-mortem: cilium-migrate history export {CLUSTER} -o FILE "
            f"--address localhost:{args.port} (while the dev server runs)")
        ended = True  # from here on, Ctrl-C is the way out, not an interruption
        keep_running(args, dev, "The dev server and the sandbox keep running")
        return exit_codes.OK
    except KeyboardInterrupt:
        say("\nstopping everything the demo started")
        return exit_codes.OK if ended else 130
    finally:
        if dev is not None:
            stop_process_group(dev)
        if (state_dir / "state.json").exists():
            cluster.down(state_dir)
        say(f"stopped the dev server and the sandbox; state and logs in {directory}")


def demo_directory(given: Path | None) -> Path:
    """Where a demo keeps its state and logs: ``given``, else a new temporary directory."""
    directory = (given or Path(tempfile.mkdtemp(prefix="cilium-migrate-demo-"))).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--dir {directory}: {error.strerror}") from None
    return directory


def interrupt_on_sigterm() -> None:
    """SIGTERM stops a demo as Ctrl-C does: through its cleanup."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


def apply_workloads(toolchain: Toolchain, state_dir: Path, directory: Path) -> None:
    kubectl = [str(toolchain["kubectl"]), "--kubeconfig", str(state_dir / "kubeconfig")]
    subprocess.run([*kubectl, "apply", "-f", str(sample_workloads(directory))], check=True,
                   stdout=subprocess.DEVNULL)


def start_dev_server(directory: Path, port: int, toolchain: Toolchain,
                     kubeconfigs: dict[str, Path]) -> subprocess.Popen[bytes]:
    """`cilium-migrate dev` in its own session, its state and log in ``directory``, its
    worker holding the kubeconfigs given (none: it runs the workflows, not a cluster's
    steps). The caller waits for it (`wait_for_server`) and stops it
    (`stop_process_group`)."""
    history = directory / "temporal.db"
    if history.exists():
        # The sandboxes are new, so are the migrations: an earlier demo's runs (say one
        # stopped halfway) must not be attached to these clusters. Kept aside for a look back.
        history.replace(directory / "temporal.db.previous")
        say(f"(the previous demo's history is in {directory / 'temporal.db.previous'})")
    clusters = [f"--cluster-kubeconfig={name}={path}" for name, path in kubeconfigs.items()]
    with open(directory / "dev.log", "ab") as log:
        return subprocess.Popen(cli_command(
            "dev", "--port", str(port), "--db-file", str(history), *clusters,
            "--helm", str(toolchain["helm"])), stdout=log, stderr=log, start_new_session=True)


def keep_running(args: argparse.Namespace, dev: subprocess.Popen[bytes], what: str) -> None:
    """After a demo, on a terminal and without --no-wait: everything stays up (the Web UI
    link can be opened) until Ctrl-C, or until the dev server stops on its own."""
    if args.no_wait or not sys.stdin.isatty():
        return
    say(f"{what}; press Ctrl-C to stop them.")
    while dev.poll() is None:
        time.sleep(1)
    say("the dev server stopped on its own; see dev.log")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stops a child started in its own session (`cilium-migrate dev` and the server it
    runs) with Ctrl-C's signal, and kills it if it has not stopped within 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def run_shown(command: list[str]) -> subprocess.CompletedProcess[str]:
    say(f"\n$ cilium-migrate {shlex.join(command)}")
    result = subprocess.run(cli_command(*command), text=True, capture_output=True)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        raise CommandError(f"`cilium-migrate {command[0]}` failed: {result.stderr.strip()}",
                           result.returncode)
    return result


def wait_for_server(address: tuple[str, ...], dev: subprocess.Popen[bytes],
                    log_name: str = "dev.log in the demo dir") -> None:
    for _ in range(240):
        if dev.poll() is not None:
            raise CommandError(f"`cilium-migrate dev` stopped; see {log_name}",
                               exit_codes.UNREACHABLE)
        probe = subprocess.run(cli_command("list", *address), capture_output=True, text=True)
        if probe.returncode == 0:
            return
        time.sleep(0.5)
    raise CommandError("the Temporal dev server did not answer", exit_codes.UNREACHABLE)


def progress_line(summary: dict[str, Any]) -> str:
    """One line of `status -o json`'s summary: the phase, how many nodes are in each state,
    and the current wave."""
    counts = ", ".join(f"{count} {state}" for state, count in summary["counts"].items()
                       if count)
    wave = summary.get("current_wave") or {}
    at = f"; wave {wave['index']} {wave.get('state', '')}".rstrip() if wave else ""
    return f"phase {summary['phase']}: {counts or 'no nodes yet'}{at}"


def pending_gates(summary: dict[str, Any]) -> list[str]:
    """The gates waiting for approval (the summary lists the first few and counts them all;
    the demo approves those listed and sees the rest on its next look)."""
    gates: list[str] = summary["pending_gates"]["items"]
    return gates


def _approve_until_done(address: tuple[str, ...]) -> None:
    shown = ""
    while True:
        result = subprocess.run(cli_command("status", CLUSTER, "-o", "json", *address),
                                capture_output=True, text=True)
        if result.returncode != 0:
            time.sleep(1)
            continue
        progress = json.loads(result.stdout)
        line = progress_line(progress)
        if line != shown:
            say(line)
            shown = line
        if progress["phase"] in ("completed", "failed", "cancelled"):
            return
        for gate in pending_gates(progress):
            run_shown(["approve", CLUSTER, gate, "--as", "demo-operator", "--reason",
                  f"demo: {gate} reviewed", *address])
        time.sleep(1)
