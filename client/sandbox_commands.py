"""`cilium-migrate sandbox ...`: build, start, inspect, stop and inject faults into a sandbox."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from client import argument_types
from sandbox import cluster
from sandbox.cilium_release import ensure_default_release
from sandbox.nettools import ensure_network_tools, real_network_unsupported
from sandbox.simulator.faults import Fault, FaultFileError, read_faults, write_faults
from sandbox.toolchain import ToolchainError, ensure_toolchain, print_progress

EXPECTED_ERRORS = (cluster.SandboxError, ToolchainError, FaultFileError)


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sandbox = groups.add_parser("sandbox", help="a local Kubernetes cluster for tests and demos")
    commands = sandbox.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build or reuse the sandbox's binaries")
    build.set_defaults(run=_build)

    def with_state_dir(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--state-dir", type=Path, default=cluster.default_state_dir(),
                             help="where the sandbox keeps its state (default: %(default)s)")
        return command

    up = with_state_dir(commands.add_parser("up", help="start a sandbox in the background"))
    up.add_argument("--nodes", type=int, required=True, help="number of nodes, control planes "
                    "included")
    up.add_argument("--control-planes", type=int, default=1)
    up.add_argument("--zones", type=int, default=1)
    up.add_argument("--cluster-name", default="sandbox")
    up.add_argument("--replace", action="store_true",
                    help="reuse a state dir whose sandbox is stopped")
    up.add_argument("--reboot-seconds", type=argument_types.seconds,
                    help="how long a simulated reboot takes")
    up.add_argument("--shared-kernel", action="store_true",
                    help="nodes are containers sharing this machine's kernel, as with kind: a "
                    "reboot keeps the bootID; STATE_DIR/bin/docker restarts and inspects them")
    up.add_argument("--network", choices=("simulated", "real"), default="simulated",
                    help="real: nodes and pods are network namespaces with real flanneld, CNI "
                         "plugins and packets (Linux, root)")
    up.add_argument("--flannel-manifest", type=Path,
                    help="install flannel from this manifest instead of the bundled v0.28.9")
    up.set_defaults(run=_up)

    status = with_state_dir(commands.add_parser("status", help="processes and node readiness"))
    status.add_argument("--output", "-o", choices=("table", "json"), default="table")
    status.set_defaults(run=_status)

    down = with_state_dir(commands.add_parser("down", help="stop every process of a sandbox"))
    down.set_defaults(run=_down)

    fault = with_state_dir(commands.add_parser(
        "fault", help="inject or clear a simulated fault on a node"))
    fault.add_argument("action", choices=("set", "clear", "list"))
    fault.add_argument("node", nargs="?")
    fault.add_argument("fault", nargs="?", choices=[f.value for f in Fault])
    fault.set_defaults(run=_fault)


def _build(args: argparse.Namespace) -> int:
    toolchain = ensure_toolchain(print_progress)
    for name, path in toolchain.paths.items():
        print(f"{name:<24} {path}")
    release = ensure_default_release(toolchain["helm"], print_progress)
    print(f"{'cilium chart':<24} {release.chart_dir}")
    print(f"{'cilium CRDs':<24} {release.crds_dir}")
    unsupported = real_network_unsupported()
    if unsupported:
        print_progress(f"skipping the real-network tools: {unsupported}")
        return 0
    for name, path in dataclasses.asdict(ensure_network_tools(print_progress)).items():
        print(f"{name:<24} {path}")
    return 0


def _up(args: argparse.Namespace) -> int:
    simulator_args: tuple[str, ...] = ()
    if args.reboot_seconds is not None:
        simulator_args = ("--reboot-seconds", str(args.reboot_seconds))
    cluster.up(args.state_dir, args.nodes, args.control_planes, args.zones,
               cluster_name=args.cluster_name, replace=args.replace,
               simulator_args=simulator_args, flannel_manifest=args.flannel_manifest,
               shared_kernel=args.shared_kernel, network=args.network, progress=print_progress)
    print(args.state_dir.resolve() / "kubeconfig")
    return 0


def _status(args: argparse.Namespace) -> int:
    report = cluster.status(args.state_dir)
    print(cluster.to_json(report) if args.output == "json" else cluster.describe(report))
    running = [p["running"] for p in report["processes"].values()]
    return 0 if running and all(running) else 3


def _down(args: argparse.Namespace) -> int:
    stopped = cluster.down(args.state_dir)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _fault(args: argparse.Namespace) -> int:
    path = args.state_dir.resolve() / "faults.yaml"
    faults = read_faults(path)
    if args.action == "list":
        for node, kinds in sorted(faults.items()):
            print(f"{node}: {', '.join(sorted(kinds))}")
        return 0
    if not args.node or (args.action == "set" and not args.fault):
        raise cluster.SandboxError(f"usage: sandbox fault {args.action} NODE "
                                   f"{'FAULT' if args.action == 'set' else '[FAULT]'}")
    kinds = faults.setdefault(args.node, set())
    if args.action == "set":
        kinds.add(Fault(args.fault))
    elif args.fault:
        kinds.discard(Fault(args.fault))
    else:
        kinds.clear()
    write_faults(path, faults)
    return 0
