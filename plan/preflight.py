"""Preflight: every check that can be made from the spec, the discovered facts and the chart's
verdict on the values.

RULES is the one registry: a rule's id, its severity and the function that looks. Findings come
out in registry order (and each rule reports in a sorted order), so the same inputs always give
the same list, which matters inside a replayed workflow and in diffs of reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from plan.chart_check import ChartVerdict
from plan.facts import ClusterFacts
from plan.findings import Finding, Severity, acknowledge
from plan.rules import chart, cni, disruption, network, nodes, values
from plan.rules.context import Issue, RuleContext
from plan.spec import MigrationSpec


class Rule(NamedTuple):
    id: str
    severity: Severity
    check: Callable[[RuleContext], Iterable[Issue]]

    @property
    def summary(self) -> str:
        """First line of the check's docstring: what the rule wants to be true."""
        return (self.check.__doc__ or self.id).strip().splitlines()[0]


def acknowledge_invalid(ctx: RuleContext) -> Iterable[Issue]:
    """Every id in `acknowledge` should name a warning rule."""
    severities = {rule.id: rule.severity for rule in RULES}
    for given in ctx.spec.acknowledge:
        if given not in severities:
            yield Issue(
                f"acknowledge lists {given!r}, which is not a preflight check id.",
                "Fix the id; `cilium-migrate` reports each finding with its id.",
                given,
            )
        elif severities[given] == "blocking":
            yield Issue(
                f"acknowledge lists {given!r}, a blocking check; it cannot be acknowledged.",
                "Fix the cause instead, and remove the id from acknowledge.",
                given,
            )


RULES: tuple[Rule, ...] = (
    # What is installed now.
    Rule("old-cni-not-flannel", "blocking", cni.old_cni_not_flannel),
    Rule("other-cni-present", "blocking", cni.other_cni_present),
    Rule("kube-proxy-absent", "blocking", cni.kube_proxy_absent),
    Rule("api-server-unknown", "blocking", cni.api_server_unknown),
    Rule("cilium-already-installed", "warning", cni.cilium_already_installed),
    Rule("network-policies-present", "warning", cni.network_policies_present),
    # Addresses and ports.
    Rule("pod-cidr-overlaps-old-network", "blocking", network.pod_cidr_overlaps_old_network),
    Rule("pod-cidr-overlaps-service", "blocking", network.pod_cidr_overlaps_service),
    Rule("pod-cidr-overlaps-node-ip", "blocking", network.pod_cidr_overlaps_node_ip),
    Rule("pod-cidr-too-small", "blocking", network.pod_cidr_too_small),
    Rule("tunnel-port-collision", "blocking", network.tunnel_port_collision),
    # The Cilium version and Helm values.
    Rule("cilium-version-unsupported", "blocking", values.cilium_version_unsupported),
    Rule("cilium-node-config-deprecated", "warning", values.cilium_node_config_deprecated),
    Rule("cilium-cluster-name-invalid", "blocking", values.cilium_cluster_name_invalid),
    Rule("ipam-mode-not-cluster-pool", "blocking", values.ipam_mode_not_cluster_pool),
    Rule("migration-key-overridden", "blocking", values.migration_key_overridden),
    Rule("kube-proxy-replacement-enabled", "blocking", values.kube_proxy_replacement_enabled),
    Rule("api-server-in-extra-values", "blocking", values.api_server_in_extra_values),
    Rule("unsupported-cilium-mode", "blocking", values.unsupported_cilium_mode),
    Rule("helm-values-invalid", "blocking", values.helm_values_invalid),
    Rule("helm-values-unknown-key", "warning", values.helm_values_unknown_key),
    Rule("chart-data-from-other-version", "info", values.chart_data_from_other_version),
    # What the chart itself made of the values.
    Rule("chart-rejects-install-values", "blocking", chart.chart_rejects_install_values),
    Rule("chart-rejects-final-values", "blocking", chart.chart_rejects_final_values),
    Rule("chart-not-rendered", "warning", chart.chart_not_rendered),
    # Nodes, waves and disruption.
    Rule("too-few-schedulable-nodes", "blocking", nodes.too_few_schedulable_nodes),
    Rule("wave-plan-invalid", "blocking", nodes.wave_plan_invalid),
    Rule("worker-node-stranded", "blocking", nodes.worker_node_stranded),
    Rule("wave-leaves-no-room", "blocking", nodes.wave_leaves_no_room),
    Rule("pdb-never-allows-eviction", "blocking", disruption.pdb_never_allows_eviction),
    Rule("pdb-allows-no-disruption-now", "warning", disruption.pdb_allows_no_disruption_now),
    Rule("drain-refuses-empty-dir-pods", "warning", disruption.drain_refuses_empty_dir_pods),
    Rule("drain-refuses-unmanaged-pods", "warning", disruption.drain_refuses_unmanaged_pods),
    Rule("canary-reduced-to-budget", "warning", nodes.canary_reduced_to_budget),
    Rule("no-worker-for-canary", "warning", nodes.no_worker_for_canary),
    Rule("node-not-ready", "warning", nodes.node_not_ready),
    Rule("node-already-labelled", "warning", nodes.node_already_labelled),
    # The spec's own acknowledgements.
    Rule("acknowledge-invalid", "warning", acknowledge_invalid),
)


def run_preflight(spec: MigrationSpec, facts: ClusterFacts,
                  chart: ChartVerdict = None) -> list[Finding]:
    """All findings for this spec and cluster (and what the chart made of the values, when it
    was rendered), acknowledgements from the spec applied."""
    ctx = RuleContext(spec, facts, chart)
    findings = [
        Finding(
            id=rule.id,
            severity=rule.severity,
            message=issue.message,
            remedy=issue.remedy,
            subject=issue.subject,
        )
        for rule in RULES
        for issue in rule.check(ctx)
    ]
    return acknowledge(findings, spec.acknowledge)

