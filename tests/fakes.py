"""Test doubles that stand in at the activity boundary (same activity names), never for
Temporal: a small in-memory cluster whose activities record what they were asked to do."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections import Counter
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from plan.contract import (
    Activity,
    AgentStatus,
    ChartRender,
    ChartRenderInput,
    CheckResult,
    CiliumStatus,
    CiliumWaitInput,
    ConnectivityFigures,
    CordonResult,
    DrainInput,
    DrainResult,
    EchoMeshInput,
    EchoMeshRemoval,
    EchoMeshStatus,
    FailedRequest,
    HealthInput,
    HealthReport,
    HelmInput,
    HelmResult,
    HostCommandInput,
    InstalledChart,
    LabelInput,
    MonitorInput,
    NodeConfigInput,
    NodeRef,
    NodeSnapshot,
    PairCounts,
    RebootInput,
    RebootResult,
    RecycleInput,
    RecycleResult,
    RemoveFlannelInput,
    RemoveFlannelResult,
    RestartAgentInput,
    RolloutRestartInput,
    SnapshotInput,
    StepError,
    SwitchedNodes,
    VerifyInput,
    VerifyResult,
)
from plan.facts import ClusterFacts, FlannelFacts, NodeFacts
from plan.policies import ClusterRef


def fake_chart(request: HelmInput) -> InstalledChart:
    """What the Helm step would record for the chart it was given: a made-up digest that
    differs per name and version, and the repository or path it names."""
    chart = request.chart
    version = chart.version or "0.0.0"
    digest = hashlib.sha256(f"{chart.name}-{version}".encode()).hexdigest()
    return InstalledChart(name=chart.name, version=version, digest=f"sha256:{digest}",
                          source=chart.path or chart.repo or "")


def passed_checks(node: str) -> list[CheckResult]:
    """What a passing verify reports, as long as the real step's report (activities/verify.py):
    a fake that answered less would hide how large thousands of node records get."""
    def peer(ip: str, pod: str) -> str:
        return f"http://{ip}:8080/hostname (cilium-migrate-echo/{pod} on {node}) answered"
    return [
        CheckResult(name="pod-ip-in-pool", outcome="passed", detail="10.245.1.9 is in "
                    "10.245.0.0/16"),
        CheckResult(name="api-server", outcome="passed", detail="/healthz answered HTTP 200"),
        CheckResult(name="dns", outcome="passed", detail="kubernetes.default resolved to "
                    "10.96.0.1"),
        CheckResult(name="peer-flannel", outcome="passed",
                    detail=peer("10.244.3.4", "cilium-migrate-echo-x7k2p")),
        CheckResult(name="peer-cilium", outcome="passed",
                    detail=peer("10.245.3.4", "cilium-migrate-echo-b8q2m")),
    ]


# Past this many nodes the fake cluster's addresses leave 10.244.0.0/16 (a /24 per node).
SMALL_CLUSTER = 250
LARGE_FLANNEL_NETWORK = "10.64.0.0/10"
LARGE_CILIUM_POOL = "10.128.0.0/10"  # a /24 for each of 16,384 nodes, apart from flannel's


class FakeCluster:
    """What the fake activities do to the world, for the test to check."""

    def __init__(self, workers: int = 4) -> None:
        self.nodes = ["cp-1", *(f"worker-{i}" for i in range(1, workers + 1))]
        self.boot = dict.fromkeys(self.nodes, 0)  # reboots so far
        self.cordoned: set[str] = set()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str]] = []  # (step, node) in the order they ran
        self.labelled: set[str] = set()
        self.drain_blocked: set[str] = set()
        self.verify_fails: set[str] = set()
        self.hold_drain: asyncio.Event | None = None
        self.hold_health: asyncio.Event | None = None  # set when a health check is held
        self.helm_values: list[dict[str, Any]] = []
        self.installed_charts: list[InstalledChart] = []  # what each Helm step reported
        # What the chart says of each phase's values ("install", "final"): absent accepts them.
        self.chart_refuses: dict[str, str] = {}
        self.rendered: list[ChartRenderInput] = []
        self.echo_mesh: str | None = None  # the mesh's namespace while it is deployed
        self.breaking_waves: set[int] = set()  # the monitor sees failed requests in these
        # Set, a cancelled monitor says so (`monitor_stopping`) and returns only once released.
        self.hold_monitor_stop: asyncio.Event | None = None
        self.monitor_stopping = asyncio.Event()
        # Fleets: the clusters discovered, in order, and those whose discovery fails.
        self.discovered: list[str] = []
        self.unreachable: set[str] = set()
        self.degraded: dict[str, str] = {}  # cluster -> what its health check reports wrong
        # These nodes' agent restarts each wait until all of them are restarting at once: a
        # worker that cannot run a wave's steps side by side never gets them all there.
        self.agents_meet: set[str] = set()
        self.agents_restarting: set[str] = set()
        self.most_agents_restarting = 0
        self._agents_met = asyncio.Event()

    def facts(self) -> ClusterFacts:
        if len(self.nodes) > SMALL_CLUSTER:
            return self._large_facts()
        return ClusterFacts(
            nodes=[NodeFacts(name=n, control_plane=n.startswith("cp"), zone="zone-a",
                             boot_id=f"{n}-boot-0", pod_cidrs=[f"10.244.{i}.0/24"],
                             internal_ip=f"127.1.0.{i + 2}")
                   for i, n in enumerate(self.nodes)],
            flannel=FlannelFacts(namespace="kube-flannel", daemonset="kube-flannel-ds",
                                 network="10.244.0.0/16"),
            service_cidrs=["10.96.0.0/12"])

    def _large_facts(self) -> ClusterFacts:
        """Up to Kubernetes' 5,000 nodes and beyond: flannel on a /10 with a /24 per node (a
        spec's Cilium pool must then be LARGE_CILIUM_POOL), addresses across 127.16.0.0/12."""
        pod_cidrs = ipaddress.ip_network(LARGE_FLANNEL_NETWORK).subnets(new_prefix=24)
        hosts = ipaddress.ip_network("127.16.0.0/12").hosts()
        return ClusterFacts(
            nodes=[NodeFacts(name=n, control_plane=n.startswith("cp"), zone="zone-a",
                             boot_id=f"{n}-boot-0", pod_cidrs=[next(pod_cidrs)],
                             internal_ip=next(hosts)) for n in self.nodes],
            flannel=FlannelFacts(namespace="kube-flannel", daemonset="kube-flannel-ds",
                                 network=LARGE_FLANNEL_NETWORK),
            service_cidrs=["10.96.0.0/12"])

    def boot_of(self, node: str, strategy: str) -> tuple[str, str]:
        """The node's bootID and boot witness as the strategy sees them. With docker the nodes
        are kind's containers, on the host's kernel: the bootID never changes, the container's
        start time does."""
        if strategy == "docker":
            return f"{node}-boot-0", f"{node}-started-{self.boot[node]}"
        boot_id = f"{node}-boot-{self.boot[node]}"
        return boot_id, boot_id

    def activities(self) -> list[Any]:
        cluster = self

        def record(name: str, argument: Any) -> str:
            target = getattr(argument, "target", argument)
            node = str(target.node) if isinstance(target, NodeRef) else "-"
            cluster.calls[(name, node)] += 1
            cluster.log.append((name, node))
            return node

        @activity.defn(name=Activity.DISCOVER)
        async def discover(ref: ClusterRef) -> ClusterFacts:
            cluster.discovered.append(ref.name)
            if ref.name in cluster.unreachable:
                raise ApplicationError(f"cannot read cluster {ref.name}: connection refused",
                                       type="DiscoveryFailed", non_retryable=True)
            return cluster.facts()

        @activity.defn(name=Activity.RENDER_CHART)
        async def render_chart(input: ChartRenderInput) -> ChartRender:
            cluster.rendered.append(input)
            return ChartRender(
                chart=InstalledChart(name="cilium", version=input.chart.version or "1.18.4",
                                     digest="sha256:0f", source=input.chart.path or "fake"),
                install_refused=cluster.chart_refuses.get("install"),
                final_refused=cluster.chart_refuses.get("final"))

        @activity.defn(name=Activity.HELM_UPGRADE)
        async def helm(input: HelmInput) -> HelmResult:
            cluster.helm_values.append(input.values)
            cluster.installed_charts.append(fake_chart(input))
            return HelmResult(revision=len(cluster.helm_values),
                              chart=cluster.installed_charts[-1])

        @activity.defn(name=Activity.WAIT_FOR_CILIUM)
        async def wait_cilium(input: CiliumWaitInput) -> CiliumStatus:
            return CiliumStatus(agents_desired=5, agents_ready=5, operator_ready=True)

        @activity.defn(name=Activity.APPLY_NODE_CONFIG)
        async def apply_config(input: NodeConfigInput) -> None:
            record("apply-config", input)

        @activity.defn(name=Activity.DELETE_NODE_CONFIG)
        async def delete_config(input: NodeConfigInput) -> None:
            record("delete-config", input)

        @activity.defn(name=Activity.SNAPSHOT_NODE)
        async def snapshot(input: SnapshotInput) -> NodeSnapshot:
            node = record("snapshot", input)
            boot_id, witness = cluster.boot_of(node, input.reboot.strategy)
            return NodeSnapshot(node=node, unschedulable=node in cluster.cordoned,
                                boot_id=boot_id, boot_witness=witness, ready=True)

        @activity.defn(name=Activity.CORDON_NODE)
        async def cordon(ref: NodeRef) -> CordonResult:
            node = record("cordon", ref)
            cluster.cordoned.add(node)
            return CordonResult(cordoned_by_us=True)

        @activity.defn(name=Activity.DRAIN_NODE)
        async def drain(input: DrainInput) -> DrainResult:
            node = record("drain", input)
            if cluster.hold_drain is not None:
                cluster.hold_drain.set()
                while True:  # a drain that takes long; only a cancellation ends it
                    await asyncio.sleep(0.2)
                    activity.heartbeat()
            if node in cluster.drain_blocked:
                raise ApplicationError(
                    f"pod t/db-0 blocked by PDB t/db-pdb on {node}",
                    [{"pod": "t/db-0", "reason": "needs 1 healthy, has 1", "pdb": "t/db-pdb"}],
                    type=StepError.DRAIN_BLOCKED, non_retryable=True)
            return DrainResult(evicted=[f"t/web-{node}"])

        @activity.defn(name=Activity.LABEL_NODE)
        async def label(input: LabelInput) -> None:
            node = record("label" if input.value else "unlabel", input)
            (cluster.labelled.add if input.value else cluster.labelled.discard)(node)

        @activity.defn(name=Activity.LIST_SWITCHED_NODES)
        async def list_switched(ref: ClusterRef) -> SwitchedNodes:
            return SwitchedNodes(switched=sorted(cluster.labelled & set(cluster.nodes)),
                                 unswitched=sorted(set(cluster.nodes) - cluster.labelled))

        @activity.defn(name=Activity.RESTART_AGENT)
        async def restart_agent(input: RestartAgentInput) -> AgentStatus:
            node = record("restart-agent", input)
            cluster.agents_restarting.add(node)
            cluster.most_agents_restarting = max(cluster.most_agents_restarting,
                                                 len(cluster.agents_restarting))
            try:
                if node in cluster.agents_meet:
                    if cluster.agents_meet <= cluster.agents_restarting:
                        cluster._agents_met.set()
                    await cluster._agents_met.wait()
            finally:
                cluster.agents_restarting.discard(node)
            return AgentStatus(pod="cilium-x", ready=True)

        @activity.defn(name=Activity.REBOOT_NODE)
        async def reboot(input: RebootInput) -> RebootResult:
            node = record("reboot", input)
            # Reboots only a node still showing the witness its snapshot read: a retry, or a
            # witness of the wrong kind, reboots nothing.
            triggered = input.before.boot_witness == cluster.boot_of(node,
                                                                     input.policy.strategy)[1]
            if triggered:
                cluster.boot[node] += 1
            boot_id, witness = cluster.boot_of(node, input.policy.strategy)
            return RebootResult(boot_id_after=boot_id, boot_witness_after=witness,
                                triggered=triggered)

        @activity.defn(name=Activity.RUN_HOST_COMMAND)
        async def host_command(input: HostCommandInput) -> None:
            record(f"host:{input.name}", input)

        @activity.defn(name=Activity.VERIFY_NODE)
        async def verify(input: VerifyInput) -> VerifyResult:
            node = record(f"verify-{input.expect}", input)
            if node in cluster.verify_fails and input.expect == "cilium":
                raise ApplicationError(
                    "probe on worker failed: api-server", {"pod_ip": "10.245.1.9", "checks": [
                        {"name": "api-server", "passed": False, "detail": "unreachable"}]},
                    type=StepError.VERIFICATION_FAILED, non_retryable=True)
            return VerifyResult(pod_ip="10.245.1.9", checks=passed_checks(node))

        @activity.defn(name=Activity.UNCORDON_NODE)
        async def uncordon(ref: NodeRef) -> bool:
            node = record("uncordon", ref)
            cluster.cordoned.discard(node)
            return True

        @activity.defn(name=Activity.CHECK_HEALTH)
        async def health(input: HealthInput) -> HealthReport:
            if cluster.hold_health is not None:
                cluster.hold_health.set()
                while True:  # a health check still waiting to converge; a cancel ends it
                    await asyncio.sleep(0.2)
            problem = cluster.degraded.get(input.cluster.name)
            return HealthReport(nodes_on_cilium=1, pods_on_cilium=1, pods_total=1,
                                flannel_ready=True, problems=[problem] if problem else [])

        @activity.defn(name=Activity.RECYCLE_PODS)
        async def recycle(input: RecycleInput) -> RecycleResult:
            return RecycleResult(recycled=[])

        @activity.defn(name=Activity.ROLLOUT_RESTART)
        async def rollout(input: RolloutRestartInput) -> None:
            record("rollout-restart", input)

        @activity.defn(name=Activity.REMOVE_FLANNEL)
        async def remove_flannel(input: RemoveFlannelInput) -> RemoveFlannelResult:
            record("remove-flannel", input)
            return RemoveFlannelResult(deleted=["kube-flannel/kube-flannel-ds"])

        @activity.defn(name=Activity.DEPLOY_ECHO_MESH)
        async def deploy_echo_mesh(input: EchoMeshInput) -> EchoMeshStatus:
            record("deploy-echo-mesh", input)
            cluster.echo_mesh = input.policy.namespace
            nodes = len(cluster.nodes) - len(input.exclude_nodes)
            return EchoMeshStatus(namespace=input.policy.namespace, image=input.policy.image,
                                  desired=nodes, ready=nodes)

        @activity.defn(name=Activity.REMOVE_ECHO_MESH)
        async def remove_echo_mesh(input: EchoMeshRemoval) -> bool:
            record("remove-echo-mesh", input)
            cluster.echo_mesh = None
            return True

        @activity.defn(name=Activity.MONITOR_CONNECTIVITY)
        async def monitor(input: MonitorInput) -> ConnectivityFigures:
            """Three good requests a round until cancelled; in a breaking wave, two failed
            requests at once (and a breach, when the monitor is to stop on one)."""
            record(f"monitor-wave-{input.wave}", input)
            failed = 2 if input.wave in cluster.breaking_waves else 0
            failures = [FailedRequest(
                at=activity.info().started_time, kind="flannel-cilium", source=f"echo-{i}",
                source_node="worker-1", source_ip="10.244.1.5", target="echo-cp",
                target_node="cp-1", target_ip="10.245.0.7", error="i/o timeout")
                for i in range(failed)]
            if failed and input.stop_on_breach:
                return ConnectivityFigures(
                    requests=failed, failed=failed, worst_window=failed, rounds=1,
                    breached=True, failures=failures,
                    by_kind={"flannel-cilium": PairCounts(requests=failed, failed=failed)})
            rounds = 0
            try:
                while True:
                    activity.heartbeat(rounds)
                    await asyncio.sleep(0.05)
                    rounds += 1
            except asyncio.CancelledError:
                if cluster.hold_monitor_stop is not None:
                    cluster.monitor_stopping.set()
                    await cluster.hold_monitor_stop.wait()
                return ConnectivityFigures(
                    requests=3 * rounds + failed, failed=failed, rounds=rounds,
                    worst_window=failed, failures=failures, by_kind={
                        "flannel-cilium": PairCounts(requests=3 * rounds + failed,
                                                     failed=failed)})

        return [discover, render_chart, helm, wait_cilium, apply_config, delete_config, snapshot,
                cordon, drain, label, restart_agent, reboot, host_command, verify, uncordon, health,
                recycle, rollout, remove_flannel, list_switched, deploy_echo_mesh,
                remove_echo_mesh, monitor]
