"""`cilium-migrate demo --fleet` (`make demo-fleet`): a fleet migrated on this machine as a
platform team would run it.

Three sandboxes, dev, staging and prod, each with sample workloads and PodDisruptionBudgets;
one Temporal dev server whose worker runs the workflows and holds no cluster's credentials;
one worker per cluster, on the cluster's own task queue, holding only that cluster's
kubeconfig. The fleet file migrates them in three stages, dev -> staging -> prod, with a soak
of a few seconds after the first two, and staging and prod each wait for a stage approval,
which the demo gives with `cilium-migrate fleet approve` (printed as it runs), showing
`fleet status` whenever a stage or a cluster moves on. As with `demo`, everything stays up
until Ctrl-C (or stops at once with `--no-wait` or without a terminal); Ctrl-C or SIGTERM
earlier stops everything the demo started too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from client import exit_codes
from client.demo_commands import (
    apply_workloads,
    cli_command,
    demo_directory,
    interrupt_on_sigterm,
    keep_running,
    run_shown,
    say,
    start_dev_server,
    stop_process_group,
    wait_for_server,
)
from client.errors import CommandError
from sandbox import cluster
from sandbox.cilium_release import ensure_default_release
from sandbox.toolchain import Toolchain, ensure_toolchain, print_progress

FLEET = "demo-fleet"
CLUSTERS = ("dev", "staging", "prod")
SOAK = "5s"
WORKERS = 2  # worker nodes per sandbox, beside its control plane


def fleet_demo(args: argparse.Namespace) -> int:
    directory = demo_directory(args.dir)
    started = time.monotonic()
    toolchain = ensure_toolchain(print_progress)
    release = ensure_default_release(toolchain["helm"], print_progress)
    address = ("--address", f"localhost:{args.port}")
    workers = args.workers or WORKERS
    dev: subprocess.Popen[bytes] | None = None
    cluster_workers: list[subprocess.Popen[bytes]] = []
    ended = False
    interrupt_on_sigterm()
    try:
        for name in CLUSTERS:
            state_dir = _state_dir(directory, name)
            say(f"== sandbox {name}: 1 control plane + {workers} workers ({state_dir})")
            cluster.up(state_dir, nodes=workers + 1, control_planes=1, zones=1,
                       cluster_name=name, replace=True,
                       simulator_args=("--reboot-seconds", "2"), progress=print_progress)
            apply_workloads(toolchain, state_dir, directory)
        say("== Temporal dev server and the central worker (workflows only, no cluster's "
            "credentials): cilium-migrate dev")
        dev = start_dev_server(directory, args.port, toolchain, {})
        wait_for_server(address, dev)
        for name in CLUSTERS:
            say(f"== worker for {name}: task queue {_queue(name)}, only {name}'s kubeconfig")
            cluster_workers.append(_start_cluster_worker(directory, name, toolchain, address))
        fleet_file = _fleet_file(directory, release.chart_dir)
        say(f"\n== the fleet file ({fleet_file})\n{fleet_file.read_text()}")
        run_shown(["fleet", "start", str(fleet_file), *address])
        _follow(address)
        run_shown(["fleet", "status", FLEET, *address])
        say(f"\nDone in {time.monotonic() - started:.0f}s. Web UI: "
            f"http://localhost:{args.port + 1000}/namespaces/default/workflows")
        say(f"Each cluster as usual: cilium-migrate status prod --address localhost:{args.port}")
        ended = True  # from here on, Ctrl-C is the way out, not an interruption
        keep_running(args, dev, "The dev server, the workers and the sandboxes keep running")
        return exit_codes.OK
    except KeyboardInterrupt:
        say("\nstopping everything the demo started")
        return exit_codes.OK if ended else 130
    finally:
        for process in [*cluster_workers, *([dev] if dev else [])]:
            stop_process_group(process)
        for name in CLUSTERS:
            if (_state_dir(directory, name) / "state.json").exists():
                cluster.down(_state_dir(directory, name))
        say(f"stopped the dev server, the workers and the sandboxes; state and logs in "
            f"{directory}")


def _state_dir(directory: Path, cluster_name: str) -> Path:
    return directory / "sandboxes" / cluster_name


def _queue(cluster_name: str) -> str:
    return f"cilium-migrate.{cluster_name}"


def _start_cluster_worker(directory: Path, name: str, toolchain: Toolchain,
                          address: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """`cilium-migrate worker` for one cluster, as the worker chart deploys it in-cluster:
    its queue, its kubeconfig, nothing else. Its own session, like the dev server."""
    kubeconfig = _state_dir(directory, name) / "kubeconfig"
    with open(directory / f"worker-{name}.log", "ab") as log:
        return subprocess.Popen(cli_command(
            "worker", *address, "--task-queue", _queue(name),
            f"--cluster-kubeconfig={name}={kubeconfig}", "--helm", str(toolchain["helm"])),
            stdout=log, stderr=log, start_new_session=True)


def _fleet_file(directory: Path, chart: Path) -> Path:
    fleet = {
        "name": FLEET,
        "approvals": {"approvers": ["demo-operator"]},
        "defaults": {
            "cilium": {"chart": {"path": str(chart)}},
            "approvals": {"policy": "none"},  # the stages are approved, not each cluster
            "drain": {"timeout": "5m"},
            "reboot": {"timeout": "5m"},
        },
        "clusters": [{"name": name, "taskQueue": _queue(name), "labels": {"env": name}}
                     for name in CLUSTERS],
        "stages": [
            {"name": "dev", "clusters": ["dev"], "soak": SOAK},
            {"name": "staging", "selector": {"env": "staging"}, "approval": True,
             "soak": SOAK},
            {"name": "prod", "selector": {"env": "prod"}, "approval": True},
        ],
    }
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return path


def _follow(address: tuple[str, ...]) -> None:
    """Watches the fleet until it ends: a line whenever a cluster's phase changes, the whole
    `fleet status` whenever a stage or a cluster moves on, and `fleet approve` for each stage
    gate that waits. A halt (a cluster failed) ends the demo: it needs a person."""
    shown_line, shown_moves = "", ""
    while True:
        result = subprocess.run(cli_command("fleet", "status", FLEET, "-o", "json", *address),
                                capture_output=True, text=True)
        if result.returncode != 0:
            time.sleep(1)
            continue
        status = json.loads(result.stdout)
        fleet = status["fleet"]
        moves = json.dumps([[s["state"] for s in fleet["stages"]],
                            {c: r["state"] for c, r in fleet["clusters"].items()},
                            fleet["pending_gates"], fleet["phase"]])
        if moves != shown_moves:
            run_shown(["fleet", "status", FLEET, *address])
            shown_moves = moves
        line = _phases_line(status)
        if line != shown_line:
            say(line)
            shown_line = line
        if fleet["phase"] != "running":
            return
        if fleet["halted"]:
            raise CommandError(f"the fleet halted: {fleet['halted']}", exit_codes.BLOCKED)
        for gate in fleet["pending_gates"]:
            run_shown(["fleet", "approve", FLEET, gate, "--as", "demo-operator", "--reason",
                       f"demo: the stage before {gate} soaked", *address])
        time.sleep(1)


def _phases_line(status: dict[str, Any]) -> str:
    """Each started cluster's own phase and nodes migrated, in one line."""
    parts = []
    for name, summary in status["clusters"].items():
        migrated = summary["counts"].get("migrated", 0)
        parts.append(f"{name} {summary['phase']} {migrated}/{summary['nodes']}")
    return "clusters: " + (", ".join(parts) or "none started yet")
