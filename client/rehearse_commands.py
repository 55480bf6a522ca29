"""`cilium-migrate rehearse`: the migration a spec describes, run first on a local copy of the
cluster, with a report of what would block it, how long it would take, and a go/no-go.

The copy is a sandbox built from a snapshot (`plan.snapshot`), read here from the cluster,
read-only, or loaded from a file a colleague attached to a change request. Then, as the demo
does, a dev server and worker run the migration with the spec as written; the only liberty
taken is who approves: "rehearsal", added to `approvals.approvers` when the spec names some.
Everything runs in `--dir`, and everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from activities.discovery import DiscoveryError
from activities.kubeapi import Kube
from activities.snapshot import read_snapshot
from client import argument_types, exit_codes
from client.demo_commands import cli_command, stop_process_group, wait_for_server
from client.errors import CommandError
from client.plan_commands import add_kube_flags, kube_for, read_spec
from client.rehearsal_run import RunObserved, drive
from client.rendering import OUTPUT_FORMATS, dump, table
from plan.findings import Finding
from plan.rehearsal import (
    APPROVER,
    NodeRun,
    RehearsalReport,
    Timing,
    WaveKind,
    rehearsal_report,
)
from plan.snapshot import ClusterSnapshot, dump_snapshot, load_snapshot
from plan.spec import MigrationSpec
from plan.spec_loader import SpecError
from sandbox import cluster, replica
from sandbox.cilium_release import ensure_default_release
from sandbox.toolchain import ensure_toolchain, print_progress

# The copy's reboots: short, since the prediction puts the cluster's own duration back.
SANDBOX_REBOOT_SECONDS = 2.0


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rehearse = groups.add_parser(
        "rehearse", help="run the migration first on a local copy shaped like the cluster")
    rehearse.add_argument("-f", "--filename", type=Path, required=True,
                          help="the migration spec, as it will run on the cluster")
    add_kube_flags(rehearse)
    rehearse.add_argument("--snapshot", type=Path, metavar="FILE",
                          help="build the copy from this snapshot instead of reading the cluster")
    rehearse.add_argument("--save-snapshot", type=Path, metavar="FILE",
                          help="where to write the snapshot read from the cluster "
                          "(default: DIR/snapshot.yaml)")
    rehearse.add_argument("--reboot-duration", type=argument_types.seconds, metavar="SECONDS",
                          help="how long a node of the cluster takes to reboot (the predicted "
                          "times use it; without it they count the copy's reboots)")
    rehearse.add_argument("--dir", type=Path, help="where the copy, the Temporal history and "
                          "the logs go (default: a new temporary directory)")
    rehearse.add_argument("--port", type=argument_types.port, default=7243,
                          help="the rehearsal's own Temporal dev server port (default: "
                          "%(default)s)")
    rehearse.add_argument("--timeout", type=argument_types.seconds, default=4 * 3600.0,
                          metavar="SECONDS", help="stop the rehearsed run after this long")
    rehearse.add_argument("--interactive", action="store_true",
                          help="approve and decide yourself, with the usual commands at the "
                          "rehearsal's --port, instead of the automatic 'rehearsal' approver")
    rehearse.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    rehearse.set_defaults(run=_rehearse)


def _rehearse(args: argparse.Namespace) -> int:
    if args.snapshot and (args.kubeconfig or args.context):
        raise CommandError("--snapshot replaces reading the cluster; drop --kubeconfig/--context")
    spec = read_spec(args.filename)
    if spec.cluster.in_cluster:
        raise CommandError("the spec reads its cluster in-cluster (cluster.inCluster); a "
                           "rehearsal runs its worker on this machine, so give the spec a "
                           "kubeconfigContext")
    snapshot = _load_snapshot(args.snapshot) if args.snapshot else None
    directory = (args.dir or Path(tempfile.mkdtemp(prefix="cilium-migrate-rehearsal-"))).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--dir {directory}: {error.strerror}") from None
    if snapshot is None:
        snapshot = _take_snapshot(args, spec, directory)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: the finally cleans up
    report = rehearse(spec, args.filename, snapshot, directory, args.port,
                      args.reboot_duration, args.timeout, args.interactive)
    print(render(report) if args.output == "table" else dump(report, args.output))
    return exit_codes.OK if report.verdict == "go" else exit_codes.BLOCKED


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _load_snapshot(path: Path) -> ClusterSnapshot:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CommandError(f"cannot read snapshot {path}: {error.strerror}") from None
    try:
        return load_snapshot(text, str(path))
    except SpecError as error:
        raise CommandError(str(error)) from None


def _take_snapshot(args: argparse.Namespace, spec: MigrationSpec,
                   directory: Path) -> ClusterSnapshot:
    kube = kube_for(spec, args.kubeconfig, args.context)
    try:
        snapshot = read_snapshot(kube, spec.cluster.name, datetime.now(UTC))
    except DiscoveryError as error:
        raise CommandError(f"discovery: {error}", exit_codes.BLOCKED) from error
    except Exception as error:  # noqa: BLE001 - connection refused, TLS, 401/403...
        raise CommandError(f"cannot read cluster {spec.cluster.name}: {error}",
                           exit_codes.UNREACHABLE) from error
    path = args.save_snapshot or directory / "snapshot.yaml"
    path.write_text(dump_snapshot(snapshot, "json" if path.suffix == ".json" else "yaml"))
    print_progress(f"snapshot of {len(snapshot.nodes)} nodes and {len(snapshot.workloads)} "
                   f"workloads written to {path}")
    return snapshot


def rehearse(spec: MigrationSpec, spec_file: Path, snapshot: ClusterSnapshot, directory: Path,
             port: int, reboot_seconds: float | None, timeout: float,
             interactive: bool = False) -> RehearsalReport:
    """Builds the copy, runs the migration on it to its end and reports; stops everything
    it started, also when interrupted."""
    toolchain = ensure_toolchain(print_progress)
    ensure_default_release(toolchain["helm"], print_progress)
    address = ("--address", f"localhost:{port}")
    started: list[subprocess.Popen[bytes]] = []
    copy: replica.Replica | None = None
    try:
        kind_nodes = spec.reboot.strategy == "docker"
        copy = replica.build(directory, snapshot, SANDBOX_REBOOT_SECONDS,
                             shared_kernel=kind_nodes, progress=print_progress)
        kubeconfig = _kubeconfig_for(spec, copy.kubeconfig, directory)
        worker_flags = ["--cluster-kubeconfig", f"{spec.cluster.name}={kubeconfig}",
                        "--helm", str(toolchain["helm"])]
        if kind_nodes:
            worker_flags += ["--docker", str(cluster.docker_shim(copy.state_dir))]
        started.append(_background(directory / "dev.log", "dev", "--port", str(port),
                                   "--headless", "--db-file", str(directory / "temporal.db"),
                                   *worker_flags))
        wait_for_server(address, started[0], str(directory / "dev.log"))
        if spec.cluster.task_queue:  # the cluster's steps run on its own queue
            started.append(_background(directory / "cluster-worker.log", "worker",
                                       "--task-queue", spec.cluster.task_queue, *address,
                                       *worker_flags))
        rehearsed_spec, notes = ((spec_file, ["approvals and decisions were made by hand "
                                              "(--interactive)"]) if interactive
                                 else spec_for_rehearsal(spec, spec_file, directory))
        result = subprocess.run(cli_command("start", "-f", str(rehearsed_spec), *address),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise CommandError(f"starting the rehearsed run failed: {result.stderr.strip()}",
                               result.returncode)
        if interactive:
            print_progress(f"migrating the copy of {spec.cluster.name}; it waits for you: "
                           f"cilium-migrate status {spec.cluster.name} --watch "
                           f"--address localhost:{port} (approve, decide, resume alike)")
        else:
            print_progress(f"migrating the copy of {spec.cluster.name}; approvals are granted "
                           f"as {APPROVER!r}")
        sandbox = Kube(str(copy.kubeconfig))
        before = {line.partition(": ")[0] for line in copy.unschedulable_before}
        observed = drive(spec.cluster.name, address, sandbox, before, timeout, print_progress,
                         interactive)
        if snapshot.cluster != spec.cluster.name:
            notes.append(f"the snapshot is of cluster {snapshot.cluster}, the spec migrates "
                         f"{spec.cluster.name}")
        notes += copy.notes + [f"the copy could not place {line} before the migration began"
                               for line in copy.unschedulable_before]
        return _report(snapshot, observed, reboot_seconds, notes)
    finally:
        for process in reversed(started):
            stop_process_group(process)
        if (directory / "sandbox" / "state.json").exists():
            cluster.down(directory / "sandbox")
        print_progress(f"stopped the copy and its Temporal server; logs in {directory}")


def _background(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(cli_command(*args), stdout=output, stderr=output,
                                start_new_session=True)


def _kubeconfig_for(spec: MigrationSpec, kubeconfig: Path, directory: Path) -> Path:
    """The copy's kubeconfig with its context named as the spec names the cluster's, so the
    spec's `kubeconfigContext` finds the copy unchanged."""
    context = spec.cluster.kubeconfig_context
    if context is None:
        return kubeconfig
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    for entry in config.get("contexts") or []:
        entry["name"] = context
    config["current-context"] = context
    renamed = directory / "rehearsal.kubeconfig"
    renamed.write_text(yaml.safe_dump(config))
    renamed.chmod(0o600)
    return renamed


def spec_for_rehearsal(spec: MigrationSpec, spec_file: Path,
                        directory: Path) -> tuple[Path, list[str]]:
    """The spec file itself, or a copy changed where the rehearsal must, with a note for
    each change: "rehearsal" joins the approvers the spec names, and a `command` reboot
    strategy becomes node-shell, since the operator's command reboots machines by name and
    must never reach the cluster's own."""
    approvers = spec.approvals.approvers
    data = yaml.safe_load(spec_file.read_text())
    notes = []
    if approvers and APPROVER not in approvers:
        data["approvals"]["approvers"] = [*approvers, APPROVER]
        notes.append(f"approvals.approvers ({', '.join(approvers)}) gained {APPROVER!r} for "
                     "the rehearsal")
    if spec.reboot.strategy == "command":
        data["reboot"] = {key: value for key, value in data["reboot"].items()
                          if key not in ("strategy", "command")}
        notes.append("reboot.strategy command was rehearsed as node-shell: the command "
                     "reboots machines by name and must not reach the cluster's")
    if not notes:
        return spec_file, []
    path = directory / "rehearsed-spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    read_spec(path)  # still a valid spec
    return path, [*notes, "nothing else of the spec was changed"]


def _report(snapshot: ClusterSnapshot, observed: RunObserved, reboot_seconds: float | None,
            notes: list[str]) -> RehearsalReport:
    summary = observed.summary
    waves = [WaveKind(index=index, kind=run["kind"], zone=run.get("zone"))
             for run in summary.get("waves") or []
             for index in range(run["first"], run["last"] + 1)]
    started, finished = summary.get("started_at"), summary.get("finished_at")
    measured = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)
                if started and finished else None)
    if observed.aborted:
        notes = [*notes, f"the rehearsal stopped the run: {observed.aborted}"]
    timing = Timing(sandbox_reboot=timedelta(seconds=SANDBOX_REBOOT_SECONDS),
                    reboot=timedelta(seconds=reboot_seconds) if reboot_seconds else None)
    if reboot_seconds is None:
        notes.append(f"no --reboot-duration: predicted times count a reboot as "
                     f"{SANDBOX_REBOOT_SECONDS:.0f}s, as in the copy")
    return rehearsal_report(
        snapshot, waves, [_as_blocked(n, observed.blocked_records) for n in observed.nodes],
        observed.unplaced,
        summary.get("phase", "unknown"), summary.get("error"), measured, timing, notes,
        [Finding.model_validate(f) for f in (summary.get("findings") or {}).get("items", [])])


def _as_blocked(record: dict[str, Any], blocked: dict[str, dict[str, Any]]) -> NodeRun:
    """A node's final record, with what blocked it when it did: the decision that let the
    run go on cleared that from the record."""
    seen = blocked.get(record["name"])
    if seen is not None:
        record = {**record, "blocker": seen.get("blocker"), "blockers": seen.get("blockers", [])}
    return NodeRun.model_validate(record)


def render(report: RehearsalReport) -> str:
    taken = f"{report.snapshot_taken_at:%Y-%m-%d %H:%M} UTC"
    lines = [f"Rehearsal of {report.cluster} (snapshot of {taken}, {report.nodes} nodes): "
             f"{report.verdict.upper()}", ""]
    lines.append(table([[str(w.index), w.kind, w.zone or "-", str(len(w.nodes)),
                         ", ".join(f"{n} {s}" for s, n in w.states.items()) or "-",
                         _duration(w.measured), _duration(w.predicted)]
                        for w in report.waves],
                       ["wave", "kind", "zone", "nodes", "ended", "in the copy", "predicted"]))
    lines.append(f"\nRun ended {report.phase}; predicted total {_duration(report.predicted_total)}"
                 f" (in the copy {_duration(report.measured_total)}), approvals not counted")
    if report.blockers:
        lines.append("\nBlockers met:")
        lines += [f"  wave {b.wave if b.wave is not None else '-'}  {b.kind:<13} "
                  f"{b.object or b.node or ''}: {b.message}" for b in report.blockers]
    if report.reasons:
        lines.append("\nNo-go because:")
        lines += [f"  - {reason}" for reason in report.reasons]
    if report.notes:
        lines.append("\nWhere the copy differs from the cluster:")
        lines += [f"  - {note}" for note in report.notes]
    return "\n".join(lines)


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s")

