"""The contract between the workflows and the activities: step names, inputs, results, errors.

Workflows import this module (it is pure); activities implement the steps. Node steps take the
policies `plan.policies` built from the spec, unchanged. Inputs carry names,
never credentials: an activity resolves the cluster's credentials from `ClusterRef` on the worker
that runs it. Every step is idempotent, so each input carries what a retry needs to tell "already
done" from "still to do" (for example the node's boot witness read before a reboot).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plan.facts import MIGRATION_LABEL
from plan.policies import (
    ClusterRef,
    ConnectivityPolicy,
    DrainPolicy,
    Overlays,
    RebootPolicy,
    VerifyPolicy,
)

# Node annotation naming the migration that cordoned the node: only that run uncordons it.
CORDONED_BY_ANNOTATION = "cilium-migrate.io/cordoned-by"
PROBE_LABEL = "cilium-migrate.io/probe"
# The echo mesh: its pods carry this app name, serve agnhost netexec on this port, and the
# namespace and DaemonSet name the cluster (and the migration) that own them.
ECHO_APP = "cilium-migrate-echo"
ECHO_LABELS = {"app.kubernetes.io/name": ECHO_APP}
ECHO_SELECTOR = f"app.kubernetes.io/name={ECHO_APP}"  # ECHO_LABELS as a label selector
ECHO_PORT = 8080
MANAGED_BY = {"app.kubernetes.io/managed-by": "cilium-migrate"}
OWNER_CLUSTER_LABEL = "cilium-migrate.io/cluster"
OWNER_MIGRATION_ANNOTATION = "cilium-migrate.io/migration"


class StepModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeRef(StepModel):
    cluster: ClusterRef
    node: str
    migration_id: str  # the migration's workflow ID: recorded as the cordon owner


class NodeStep(StrEnum):
    """A node's steps, in the order the procedure runs them (rollback after a decision)."""

    SNAPSHOT = "snapshot"
    CORDON = "cordon"
    DRAIN = "drain"
    LABEL = "label"
    RESTART_AGENT = "restart-agent"
    REBOOT = "reboot"
    VERIFY = "verify"
    UNCORDON = "uncordon"
    ROLLBACK = "rollback"
    DONE = "done"


class NodeNote(StepModel):
    """A Kubernetes Event a step records on its node when it succeeds."""

    reason: str
    message: str


# ---- node steps ------------------------------------------------------------------------------

class SnapshotInput(StepModel):
    target: NodeRef
    # How the node will be rebooted: the snapshot reads the boot witness this policy's strategy
    # watches, before anything can trigger the reboot.
    reboot: RebootPolicy


class NodeSnapshot(StepModel):
    node: str
    unschedulable: bool
    boot_id: str  # status.nodeInfo.bootID, for humans: a container node keeps its host's
    # What changes when the node reboots, as its reboot strategy reads it: the bootID for a
    # machine; for a kind node, a container on the host's kernel, the container's start time.
    boot_witness: str
    ready: bool
    labels: dict[str, str] = Field(default_factory=dict)
    cordoned_by: str | None = None  # value of CORDONED_BY_ANNOTATION, if any

    @model_validator(mode="before")
    @classmethod
    def _witness_of_older_snapshots(cls, data: Any) -> Any:
        """Snapshots in the histories of runs started before boot witnesses existed have none;
        their reboot compared bootIDs, so the bootID is their witness (and they replay)."""
        if isinstance(data, dict) and "boot_witness" not in data and "boot_id" in data:
            return {**data, "boot_witness": data["boot_id"]}
        return data


class CordonResult(StepModel):
    cordoned_by_us: bool  # False when someone else had already cordoned it


class DrainInput(StepModel):
    target: NodeRef
    policy: DrainPolicy


class DrainBlocker(StepModel):
    """One pod the drain could not evict, and why (e.g. the PDB that refused it)."""

    pod: str  # namespace/name
    reason: str
    pdb: str | None = None  # namespace/name


class DrainResult(StepModel):
    evicted: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # DaemonSet and mirror pods
    forced: list[str] = Field(default_factory=list)


class LabelInput(StepModel):
    target: NodeRef
    key: str = MIGRATION_LABEL
    value: str | None = "true"  # None removes the label


class RestartAgentInput(StepModel):
    target: NodeRef
    namespace: str
    timeout_seconds: float
    # An agent created at or after this instant already read the current overrides, so a
    # retried step waits for it instead of restarting it again.
    not_before: datetime


class AgentStatus(StepModel):
    pod: str
    ready: bool
    # The new agent pod's creation and its Ready condition's change, as the API server has them
    # (whole seconds): how much of the step was the cluster replacing the agent, and how much
    # came after, for a post-mortem or a benchmark. None in steps recorded before.
    created_at: datetime | None = None
    ready_at: datetime | None = None


class RebootInput(StepModel):
    target: NodeRef
    policy: RebootPolicy
    # The snapshot taken with the same policy before the reboot was ever asked for: its
    # boot_witness tells a retried step whether its reboot already happened.
    before: NodeSnapshot
    cilium_namespace: str  # where the node-shell pod runs and the new agent is awaited


class RebootResult(StepModel):
    boot_id_after: str
    boot_witness_after: str
    triggered: bool  # False when the node had already rebooted (a retried step)


class HostCommandInput(StepModel):
    """Runs a command on the node's host through a node-shell pod (rollback file moves)."""

    target: NodeRef
    name: str  # step name, part of the pod name so a retry finds its earlier pod
    script: str
    image: str
    timeout_seconds: float = 120.0
    namespace: str = "kube-system"  # where the node-shell pod runs (privileged: a system namespace)
    on_success: NodeNote | None = None


class VerifyInput(StepModel):
    target: NodeRef
    policy: VerifyPolicy
    overlays: Overlays
    expect: Literal["cilium", "flannel"] = "cilium"  # which range the probe's IP must be in
    namespace: str = "kube-system"  # where the probe pod runs


# What a verify check concluded. "not-checked": there was nothing to check against (no pod on
# Cilium nodes yet for the canary, say); it is neither a pass nor a failure, and says so.
CheckOutcome = Literal["passed", "failed", "not-checked"]


class CheckResult(StepModel):
    name: str
    outcome: CheckOutcome
    detail: str = ""

    @model_validator(mode="before")
    @classmethod
    def _recorded_as_passed(cls, data: Any) -> Any:
        # Histories recorded before outcomes existed carry {"passed": bool}; replays read them.
        if isinstance(data, dict) and "passed" in data and "outcome" not in data:
            data = {**data, "outcome": "passed" if data["passed"] else "failed"}
            del data["passed"]
        return data

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


class VerifyResult(StepModel):
    pod_ip: str | None
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        """Nothing failed; checks that could not be made do not count against the node."""
        return not any(check.failed for check in self.checks)


class ProbeAnswer(StepModel):
    """What the probe's HTTPS request to the API server's /healthz got back."""

    # The HTTP status of the answer; None when nothing answered (no route, a refused
    # connection, a failed TLS handshake). 401 and 403 are answers: the server is reachable.
    status: int | None = Field(ge=100, le=599)
    error: str  # wget's messages when there was no answer, else empty


class DnsAnswer(StepModel):
    """What the probe's lookup of ``kubernetes.default`` found."""

    name: str  # the name that resolved (the search domain that made it), or the name asked
    addresses: list[str] = Field(default_factory=list)  # empty: the name did not resolve
    error: str = ""  # nslookup's messages when nothing resolved, as the script cleans them


class ProbeReport(StepModel):
    """The probe pod's termination message: the one contract between the probe script
    (`activities.verify.PROBE_SCRIPT`), the activity that reads it, and the sandbox's simulated
    probe (`sandbox.simulator.personalities.Probe`), which prints what the script would.

    As JSON, written by the script to its termination-message path, one line::

        {"podIP": "10.245.1.7", "node": "worker-1",
         "apiServer": {"status": 401, "error": ""},
         "dns": {"name": "kubernetes.default.svc.cluster.local", "addresses": ["10.96.0.1"],
             "error": ""},
         "peers": {"10.244.2.3": true, "10.245.3.4": false}}

    ``apiServer.status`` is null, and ``error`` holds wget's messages joined with "; " (printable
    ASCII only, quotes and backslashes removed, at most 300 characters), when nothing
    answered. ``dns`` is what ``nslookup kubernetes.default`` found, trying the pod's search
    domains in order as its resolver would. ``peers`` has one key per address in the pod's
    ``PROBE_PEERS``: whether an HTTP GET of ``/hostname`` on the echo port got an answer. The
    script exits 0 only when the API server answered, the name resolved and every peer answered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pod_ip: str = Field(alias="podIP")
    node: str
    api_server: ProbeAnswer = Field(alias="apiServer")
    dns: DnsAnswer | None = None  # None: a probe script from before the DNS check
    peers: dict[str, bool]


# ---- cluster steps ---------------------------------------------------------------------------

class ChartRef(StepModel):
    repo: str | None = None
    name: str = "cilium"
    path: str | None = None
    version: str | None = None


class HelmInput(StepModel):
    cluster: ClusterRef
    release: str = "cilium"
    namespace: str
    chart: ChartRef
    values: dict[str, Any]
    timeout_seconds: float = 600.0


class InstalledChart(StepModel):
    """Exactly which chart an install ran: a post-mortem can fetch the same bytes again."""

    name: str
    version: str
    digest: str  # "sha256:<hex>" of the archive, or "sha256-tree:<hex>" of a chart directory
    source: str  # the repository URL, OCI reference or path it came from


class ChartRenderInput(StepModel):
    """`helm template` of the chart with both phases' values, offline, as the cluster would
    be told: its Kubernetes version and the API group/versions it serves."""

    chart: ChartRef
    release: str = "cilium"
    namespace: str
    install_values: dict[str, Any]
    final_values: dict[str, Any]
    kube_version: str | None = None  # e.g. "v1.35.4"; None leaves helm's default
    api_versions: list[str] = Field(default_factory=list)  # e.g. "apps/v1"


class ChartRender(StepModel):
    """What the chart made of the values: None where it accepted them, else its own message
    (its values.schema.json or its validate.yaml), without helm's wrapping."""

    chart: InstalledChart  # the chart rendered, exactly (what an install would record)
    install_refused: str | None = None
    final_refused: str | None = None


class HelmResult(StepModel):
    revision: int
    chart: InstalledChart | None = None  # None in histories recorded before it was kept


class CiliumWaitInput(StepModel):
    cluster: ClusterRef
    namespace: str
    timeout_seconds: float


class CiliumStatus(StepModel):
    agents_desired: int
    agents_ready: int
    operator_ready: bool


class NodeConfigInput(StepModel):
    """The CiliumNodeConfig that switches labelled nodes (`plan.node_config` decides it)."""

    cluster: ClusterRef
    namespace: str
    name: str
    api_version: str
    label: str = MIGRATION_LABEL
    defaults: dict[str, str]


class HealthInput(StepModel):
    cluster: ClusterRef
    cilium_namespace: str
    cilium_pools: list[str]
    flannel_namespace: str | None
    flannel_daemonset: str | None
    # How long the check waits for the cluster to converge after a wave (restarting pods, the
    # DaemonSet controller's counts) before it reports what has not. The default leaves room
    # within the 90 s a default step may run (workflows/steps.py: SHORT + 30 s).
    timeout_seconds: float = Field(default=60.0, ge=0)


class HealthReport(StepModel):
    nodes_on_cilium: int
    pods_on_cilium: int
    pods_total: int
    flannel_ready: bool
    problems: list[str] = Field(default_factory=list)


class RecycleInput(StepModel):
    cluster: ClusterRef
    cilium_pools: list[str]
    timeout_seconds: float
    namespaces: list[str] | None = None  # None: every namespace


class RecycleResult(StepModel):
    recycled: list[str]
    # Pods outside the pools that no controller owns: reported, never evicted.
    unmanaged: list[str] = Field(default_factory=list)


class RolloutRestartInput(StepModel):
    cluster: ClusterRef
    namespace: str
    daemonset: str = "cilium"
    # How long the rollout may make no progress (no pod updated, Ready or available): it may
    # last hours in all, a few agents at a time.
    timeout_seconds: float
    # Written to the pod template's restartedAt annotation; the same value twice restarts once.
    restarted_at: str = ""


class RemoveFlannelInput(StepModel):
    cluster: ClusterRef
    namespace: str
    daemonset: str


class RemoveFlannelResult(StepModel):
    deleted: list[str]


class SwitchedNodes(StepModel):
    """The cluster's nodes now, by whether the migration label selects them for Cilium."""

    switched: list[str] = Field(default_factory=list)
    unswitched: list[str] = Field(default_factory=list)


# ---- the echo mesh and the connectivity monitor ------------------------------------------------

class EchoMeshInput(StepModel):
    cluster: ClusterRef
    migration_id: str
    policy: ConnectivityPolicy
    exclude_nodes: list[str] = Field(default_factory=list)  # nodes the run leaves alone
    timeout_seconds: float = 300.0  # how long the deploy waits for the echo pods to be Ready


class EchoMeshStatus(StepModel):
    namespace: str
    image: str
    desired: int  # echo pods the DaemonSet controller schedules
    ready: int  # of which Ready when the step returned


class EchoMeshRemoval(StepModel):
    cluster: ClusterRef
    migration_id: str
    namespace: str
    timeout_seconds: float = 300.0


# Which overlays a monitored request crossed: source pod's, then target pod's, sorted so that
# flannel->cilium and cilium->flannel count together.
PairKind = Literal["flannel-flannel", "flannel-cilium", "cilium-cilium"]
PAIR_KINDS: tuple[PairKind, ...] = ("flannel-flannel", "flannel-cilium", "cilium-cilium")
FAILURES_KEPT = 20  # failed requests a figure keeps, the latest, with their pairs


class MonitorInput(StepModel):
    cluster: ClusterRef
    wave: int
    policy: ConnectivityPolicy
    overlays: Overlays
    # The monitor returns its figures after this long (the workflow starts the next one), so a
    # wave that waits days for a decision records one result an hour, not one long step.
    duration_seconds: float = Field(default=3600.0, gt=0)
    # Return as soon as a window holds too many failures. After the rollout halted, the next
    # monitor of the wave only counts: every further failure would otherwise end a step.
    stop_on_breach: bool = True


class PairCounts(StepModel):
    requests: int = 0
    failed: int = 0


class FailedRequest(StepModel):
    """One echo pod's /dial of another that did not get an answer."""

    at: datetime
    kind: PairKind
    source: str  # pod name
    source_node: str
    source_ip: str
    target: str
    target_node: str
    target_ip: str
    error: str


class ConnectivityFigures(StepModel):
    """What the monitor counted: one monitor run's result, and a wave's sum of them.

    A request is counted when both ends were in service (Ready echo pods on nodes that are
    neither cordoned nor NotReady) before and after it; a failure whose end went into
    maintenance meanwhile (a node cordoned, rebooting) is `in_maintenance`, not failed.
    `unreachable` counts rounds' calls the API server could not deliver to the source pod
    (its pod proxy); those made no request between pods at all.
    """

    requests: int = 0
    failed: int = 0
    by_kind: dict[PairKind, PairCounts] = Field(default_factory=dict)
    in_maintenance: int = 0
    unreachable: int = 0
    rounds: int = 0
    worst_window: int = 0  # the most failed requests within any one window
    failures: list[FailedRequest] = Field(default_factory=list)  # the latest FAILURES_KEPT
    breached: bool = False  # more than max_failed_requests failed within one window
    unavailable: str | None = None  # why no request could be made at all (e.g. no packets)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def plus(self, later: ConnectivityFigures) -> ConnectivityFigures:
        """These figures and a later monitor's, as one: a wave's sum."""
        kinds = {kind: PairCounts(
            requests=sum(f.by_kind[kind].requests for f in (self, later) if kind in f.by_kind),
            failed=sum(f.by_kind[kind].failed for f in (self, later) if kind in f.by_kind))
            for kind in PAIR_KINDS if kind in self.by_kind or kind in later.by_kind}
        requests = self.requests + later.requests
        return ConnectivityFigures(
            requests=requests, failed=self.failed + later.failed, by_kind=kinds,
            in_maintenance=self.in_maintenance + later.in_maintenance,
            unreachable=self.unreachable + later.unreachable,
            rounds=self.rounds + later.rounds,
            worst_window=max(self.worst_window, later.worst_window),
            failures=[*self.failures, *later.failures][-FAILURES_KEPT:],
            breached=self.breached or later.breached,
            unavailable=None if requests else (later.unavailable or self.unavailable),
            started_at=self.started_at or later.started_at,
            ended_at=later.ended_at or self.ended_at)


# ---- typed failures the workflows decide on ---------------------------------------------------

class StepError:
    """`ApplicationError.type` values raised non-retryable by activities."""

    DISCOVERY_FAILED = "DiscoveryFailed"  # the cluster is not what discovery can read
    DRAIN_BLOCKED = "DrainBlocked"  # details[0]: list of DrainBlocker dicts
    RECYCLE_BLOCKED = "RecycleBlocked"  # details[0]: list of DrainBlocker dicts
    VERIFICATION_FAILED = "VerificationFailed"  # details[0]: VerifyResult dict
    NODE_GONE = "NodeGone"
    REBOOT_NOT_COMPLETING = "RebootNotCompleting"
    BOOT_WITNESS_UNREADABLE = "BootWitnessUnreadable"  # e.g. `docker inspect` failed
    AGENT_NOT_READY = "AgentNotReady"
    HOST_COMMAND_FAILED = "HostCommandFailed"
    HELM_FAILED = "HelmFailed"
    HELM_RELEASE_BUSY = "HelmReleaseBusy"  # pending, and not by this step: a human decides
    CHART_UNAVAILABLE = "ChartUnavailable"  # the chart could not be fetched (or helm run)
    CLUSTER_UNHEALTHY = "ClusterUnhealthy"
    NAMESPACE_NOT_OURS = "NamespaceNotOurs"  # the echo mesh's namespace belongs to someone else


class Activity:
    """Activity names: the workflow calls these, the worker registers functions under them."""

    DISCOVER = "discover_cluster"
    SNAPSHOT_NODE = "snapshot_node"
    CORDON_NODE = "cordon_node"
    DRAIN_NODE = "drain_node"
    LABEL_NODE = "label_node"
    RESTART_AGENT = "restart_agent"
    REBOOT_NODE = "reboot_node"
    RUN_HOST_COMMAND = "run_host_command"
    VERIFY_NODE = "verify_node"
    UNCORDON_NODE = "uncordon_node"
    RENDER_CHART = "render_chart"
    HELM_UPGRADE = "helm_upgrade"
    WAIT_FOR_CILIUM = "wait_for_cilium"
    APPLY_NODE_CONFIG = "apply_node_config"
    DELETE_NODE_CONFIG = "delete_node_config"
    CHECK_HEALTH = "check_health"
    RECYCLE_PODS = "recycle_pods"
    ROLLOUT_RESTART = "rollout_restart"
    REMOVE_FLANNEL = "remove_flannel"
    LIST_SWITCHED_NODES = "list_switched_nodes"
    DEPLOY_ECHO_MESH = "deploy_echo_mesh"
    REMOVE_ECHO_MESH = "remove_echo_mesh"
    MONITOR_CONNECTIVITY = "monitor_connectivity"
