"""One migration plan from a spec and the facts: findings, waves and Helm values together.

This is what `cilium-migrate plan` shows before anything touches the cluster, built from the
same pure functions the ClusterMigration workflow calls, so the plan shown is the plan run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from plan.api_endpoint import agent_api_endpoint, describe_agent_api_endpoint
from plan.chart_check import ChartVerdict
from plan.contract import ChartRender, InstalledChart
from plan.facts import ApiEndpoint, ClusterFacts
from plan.findings import Finding, blocking, unacknowledged
from plan.helm_values import final_values, initial_values, values_diff
from plan.preflight import run_preflight
from plan.spec import MigrationSpec
from plan.waves import PlanError, Wave, excluded_nodes, plan_waves


class FactsSummary(BaseModel):
    nodes: int
    control_planes: int
    zones: list[str]
    flannel: str | None  # "kube-flannel/kube-flannel-ds 10.244.0.0/16 vxlan:8472"
    other_cnis: list[str]
    service_cidrs: list[str]
    existing_cilium: str | None
    network_policies: int
    pdbs_blocking_now: list[str]
    kube_proxy: bool
    # Where the Cilium agents reach the API server (k8sServiceHost/Port) and from which source;
    # None leaves it to the kubernetes Service. api_server_for_agents says the same in words.
    api_endpoint: ApiEndpoint | None
    api_server_for_agents: str
    api_endpoint_notes: list[str]  # addresses the cluster publishes that were unusable, and why


class MigrationPlan(BaseModel):
    cluster: str
    can_run: bool  # no blocking finding; warnings still need acknowledging (spec or approval)
    warnings_to_acknowledge: list[str]
    facts: FactsSummary
    findings: list[Finding]
    waves: list[Wave]
    excluded_nodes: list[str]
    initial_values: dict[str, Any]
    final_values: dict[str, Any]
    values_diff: list[tuple[str, Any, Any]]
    rendered_chart: InstalledChart | None = None  # the chart the values were rendered with


def summarize(spec: MigrationSpec, facts: ClusterFacts) -> FactsSummary:
    flannel = facts.flannel
    return FactsSummary(
        nodes=len(facts.nodes),
        control_planes=sum(n.control_plane for n in facts.nodes),
        zones=sorted({n.zone for n in facts.nodes if n.zone}),
        flannel=(f"{flannel.namespace}/{flannel.daemonset} {flannel.network} "
                 f"{flannel.backend_type}:{flannel.port}") if flannel else None,
        other_cnis=facts.other_cnis,
        service_cidrs=[str(c) for c in facts.service_cidrs],
        existing_cilium=(f"{facts.existing_cilium.namespace} "
                         f"{facts.existing_cilium.version or ''}".strip()
                         if facts.existing_cilium else None),
        network_policies=len(facts.network_policies),
        pdbs_blocking_now=[str(p) for p in facts.pdbs if p.disruptions_allowed == 0],
        kube_proxy=facts.kube_proxy_present,
        api_endpoint=agent_api_endpoint(spec, facts),
        api_server_for_agents=describe_agent_api_endpoint(spec, facts),
        api_endpoint_notes=facts.api_endpoint_notes,
    )


def make_plan(spec: MigrationSpec, facts: ClusterFacts,
              chart: ChartVerdict = None) -> MigrationPlan:
    """The plan; `chart` is what rendering the chart with these values gave (refusals become
    blocking findings), or why it could not be rendered."""
    findings = run_preflight(spec, facts, chart)
    try:
        waves = plan_waves(spec, facts)
    except PlanError:
        waves = []  # preflight reports why (wave-plan-invalid)
    initial, final = initial_values(spec, facts), final_values(spec, facts)
    return MigrationPlan(
        cluster=spec.cluster.name, can_run=not blocking(findings),
        warnings_to_acknowledge=[f.id for f in unacknowledged(findings)],
        facts=summarize(spec, facts), findings=findings, waves=waves,
        excluded_nodes=excluded_nodes(spec, facts),
        initial_values=initial, final_values=final, values_diff=values_diff(initial, final),
        rendered_chart=chart.chart if isinstance(chart, ChartRender) else None)
