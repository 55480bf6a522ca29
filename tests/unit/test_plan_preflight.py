"""Preflight: every rule fires on a case made for it and stays quiet on its near miss."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from plan.chart_check import ChartNotRendered, ChartVerdict
from plan.contract import ChartRender, InstalledChart
from plan.facts import MIGRATION_LABEL, ClusterFacts
from plan.findings import Finding, blocking, unacknowledged
from plan.preflight import RULES, run_preflight
from plan.spec import MigrationSpec

FactsChange = Callable[[ClusterFacts], ClusterFacts]


def healthy_facts() -> ClusterFacts:
    """A small flannel cluster with nothing wrong: three workers in two zones, one control plane."""
    workers = [
        {
            "name": f"w{index}",
            "zone": "a" if index < 3 else "b",
            "internal_ip": f"192.168.1.{10 + index}",
            "pod_cidrs": [f"10.244.{index}.0/24"],
            "boot_id": f"boot-{index}",
        }
        for index in (1, 2, 3)
    ]
    control_plane = {
        "name": "cp1",
        "control_plane": True,
        "internal_ip": "192.168.1.2",
        "pod_cidrs": ["10.244.0.0/24"],
        "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
    }
    return ClusterFacts.model_validate(
        {
            "nodes": [control_plane, *workers],
            "flannel": {
                "namespace": "kube-flannel",
                "daemonset": "kube-flannel-ds",
                "network": "10.244.0.0/16",
            },
            "service_cidrs": ["10.96.0.0/12"],
            "api_endpoint": {"host": "192.168.1.2", "port": 6443, "source": "kube-proxy"},
        }
    )


def spec_of(**sections: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": "prod"}, **sections}, by_name=False)


def same(facts: ClusterFacts) -> ClusterFacts:
    return facts


def facts_with(**fields: Any) -> FactsChange:
    # Re-validate rather than model_copy(update=...), which would keep plain dicts unparsed.
    return lambda facts: ClusterFacts.model_validate({**facts.model_dump(), **fields})


def node_with(name: str, **fields: Any) -> FactsChange:
    def change(facts: ClusterFacts) -> ClusterFacts:
        nodes = [
            {**node.model_dump(), **fields} if node.name == name else node.model_dump()
            for node in facts.nodes
        ]
        return facts_with(nodes=nodes)(facts)

    return change


def flannel(**fields: Any) -> FactsChange:
    base = {"namespace": "kube-flannel", "daemonset": "kube-flannel-ds", "network": "10.244.0.0/16"}
    return facts_with(flannel={**base, **fields})


def both(*changes: FactsChange) -> FactsChange:
    def change(facts: ClusterFacts) -> ClusterFacts:
        for one in changes:
            facts = one(facts)
        return facts

    return change


def extra(values: dict[str, Any]) -> dict[str, Any]:
    return {"cilium": {"extraValues": values}}


def pdb(expected: int, desired: int, healthy: int, allowed: int) -> dict[str, Any]:
    return {
        "namespace": "db",
        "name": "postgres",
        "selector": "app=postgres",
        "expected_pods": expected,
        "desired_healthy": desired,
        "current_healthy": healthy,
        "disruptions_allowed": allowed,
    }


def findings_for(sections: dict[str, Any], change: FactsChange,
                 chart: ChartVerdict = None) -> list[Finding]:
    return run_preflight(spec_of(**sections), change(healthy_facts()), chart)


def rendered(install: str | None = None, final: str | None = None) -> ChartRender:
    """What rendering the chart said: None accepts that phase's values."""
    chart = InstalledChart(name="cilium", version="1.18.4", digest="sha256:0f", source="test")
    return ChartRender(chart=chart, install_refused=install, final_refused=final)


REMOVED = "tunnel was deprecated in v1.14 and has been removed in v1.15."


LONG_NAME = "production-europe-west-frankfurt-1"  # 34 characters
CILIUM = {"namespace": "kube-system", "version": "1.18.1", "release": "cilium"}
CACHE = {"namespace": "shop", "name": "cache-0", "node": "w2", "empty_dirs": ["scratch"]}
STRAY = {"namespace": "default", "name": "debug", "node": "w1", "unmanaged": True}
POLICY = {"namespace": "a", "name": "b"}
CORDONED_W1 = node_with("w1", schedulable=False)
# w1 (the canary) is cordoned and the control plane is tainted: wave 2 (w2, w3) leaves no room.
COLLISION = both(CORDONED_W1, facts_with(worker_node="w2"))
WORKER_ON_CANARY = both(CORDONED_W1, facts_with(worker_node="w1"))  # wave 1 leaves w2, w3 free
TWO_DOWN = both(node_with("w1", ready=False), node_with("w2", schedulable=False))
NO_WAY_TO_API = facts_with(kube_proxy_present=False, api_endpoint=None)
API_IN_SPEC = {"cilium": {"k8sServiceHost": "10.0.0.5", "k8sServicePort": 6443}}

# (rule id, spec sections, change to the healthy facts): each case must make that rule fire.
TRIGGERS = [
    ("old-cni-not-flannel", {}, facts_with(flannel=None)),
    ("other-cni-present", {}, facts_with(other_cnis=["calico"])),
    ("kube-proxy-absent", {}, facts_with(kube_proxy_present=False)),
    ("api-server-unknown", {}, NO_WAY_TO_API),
    ("cilium-already-installed", {}, facts_with(existing_cilium=CILIUM)),
    ("network-policies-present", {}, facts_with(network_policies=[POLICY])),
    ("pod-cidr-overlaps-old-network", {"network": {"podCIDRs": ["10.244.128.0/17"]}}, same),
    ("pod-cidr-overlaps-old-network", {}, node_with("w1", pod_cidrs=["10.245.7.0/24"])),
    ("pod-cidr-overlaps-service", {"network": {"podCIDRs": ["10.100.0.0/16"]}}, same),
    ("pod-cidr-overlaps-node-ip", {"network": {"podCIDRs": ["192.168.0.0/16"]}}, same),
    ("pod-cidr-too-small", {"network": {"podCIDRs": ["10.245.0.0/23"]}}, same),
    ("pod-cidr-too-small", extra({"ipam": {"operator": {"clusterPoolIPv4MaskSize": 17}}}), same),
    ("tunnel-port-collision", {"network": {"tunnelPort": 8472}}, same),
    ("tunnel-port-collision", {"network": {"tunnelPort": 8472, "tunnelProtocol": "geneve"}}, same),
    ("tunnel-port-collision", extra({"tunnelPort": 0}), same),
    ("cilium-version-unsupported", {"cilium": {"version": "1.12.19"}}, same),
    ("cilium-node-config-deprecated", {"cilium": {"version": "1.15.7"}}, same),
    ("cilium-cluster-name-invalid", {"cluster": {"name": LONG_NAME}}, same),
    ("cilium-cluster-name-invalid", extra({"cluster": {"name": "Prod_EU"}}), same),
    ("ipam-mode-not-cluster-pool", extra({"ipam": {"mode": "kubernetes"}}), same),
    ("migration-key-overridden", extra({"routingMode": "native"}), same),
    ("migration-key-overridden", extra({"bpf": None}), same),
    ("kube-proxy-replacement-enabled", extra({"kubeProxyReplacement": "true"}), same),
    ("kube-proxy-replacement-enabled", extra({"kubeProxyReplacement": True}), same),
    ("api-server-in-extra-values", extra({"k8sServiceHost": "10.0.0.5"}), same),
    ("api-server-in-extra-values", extra({"k8sServicePort": None}), same),
    ("unsupported-cilium-mode", extra({"cni": {"chainingMode": "generic-veth"}}), same),
    ("unsupported-cilium-mode", extra({"bgpControlPlane": {"enabled": True}}), same),
    ("unsupported-cilium-mode", extra({"ipv6": {"enabled": True}}), same),
    ("helm-values-invalid", extra({"hubble": {"enabled": "yes"}}), same),
    ("helm-values-unknown-key", extra({"tunnelPortt": 8473}), same),
    ("chart-data-from-other-version", {"cilium": {"version": "1.19.0"}}, same),
    ("chart-rejects-install-values", extra({"tunnel": "vxlan"}), same, rendered(install=REMOVED)),
    ("chart-rejects-final-values", {}, same, rendered(final="hubble.enabled must be true")),
    ("chart-not-rendered", {}, same, ChartNotRendered(reason="cannot run helm")),
    ("too-few-schedulable-nodes", {}, TWO_DOWN),
    ("wave-plan-invalid", {"rollout": {"firstNodes": ["w9"]}}, same),
    ("worker-node-stranded", {"rollout": {"maxUnavailable": 2}}, COLLISION),
    ("wave-leaves-no-room", {"rollout": {"maxUnavailable": 2}}, CORDONED_W1),
    ("pdb-never-allows-eviction", {}, facts_with(pdbs=[pdb(3, 3, 3, 0)])),
    ("pdb-allows-no-disruption-now", {}, facts_with(pdbs=[pdb(3, 2, 2, 0)])),
    ("drain-refuses-empty-dir-pods", {}, facts_with(pods_drain_may_refuse=[CACHE])),
    ("drain-refuses-unmanaged-pods", {}, facts_with(pods_drain_may_refuse=[STRAY])),
    ("canary-reduced-to-budget", {"rollout": {"canarySize": 3, "maxUnavailable": 2}}, same),
    ("no-worker-for-canary", {"rollout": {"excludeNodes": ["w1", "w2", "w3"]}}, same),
    ("node-not-ready", {}, node_with("w3", ready=False)),
    ("node-already-labelled", {}, node_with("w2", labels={MIGRATION_LABEL: "true"})),
    ("acknowledge-invalid", {"acknowledge": ["no-such-check"]}, same),
    ("acknowledge-invalid", {"acknowledge": ["kube-proxy-absent"]}, same),
]

# Cases close to a trigger that must not make the rule fire.
NEAR_MISSES = [
    ("old-cni-not-flannel", {}, flannel(namespace="kube-system", daemonset="kube-flannel")),
    ("other-cni-present", {}, facts_with(existing_cilium=CILIUM)),
    ("kube-proxy-absent", extra({"kubeProxyReplacement": "false"}), same),
    ("api-server-unknown", {}, facts_with(api_endpoint=None)),  # kube-proxy carries the Service
    ("api-server-unknown", API_IN_SPEC, NO_WAY_TO_API),
    ("api-server-unknown", {}, facts_with(kube_proxy_present=False)),  # published address
    ("cilium-already-installed", {}, facts_with(other_cnis=["weave"])),
    ("network-policies-present", {}, facts_with(pdbs=[pdb(3, 2, 3, 1)])),
    ("pod-cidr-overlaps-old-network", {"network": {"podCIDRs": ["10.245.0.0/16"]}}, same),
    ("pod-cidr-overlaps-service", {"network": {"podCIDRs": ["10.112.0.0/16"]}}, same),
    ("pod-cidr-overlaps-node-ip", {"network": {"podCIDRs": ["192.169.0.0/16"]}}, same),
    ("pod-cidr-too-small", {"network": {"podCIDRs": ["10.245.0.0/22"]}}, same),
    ("tunnel-port-collision", {"network": {"tunnelPort": 8472}}, flannel(backend_type="host-gw")),
    ("tunnel-port-collision", {"network": {"tunnelPort": 8472}}, flannel(port=8999)),
    ("cilium-version-unsupported", {"cilium": {"version": "1.13.0"}}, same),
    ("cilium-node-config-deprecated", {"cilium": {"version": "1.16.0"}}, same),
    ("cilium-node-config-deprecated", {"cilium": {"version": "1.12.0"}}, same),
    ("cilium-cluster-name-invalid", {"cluster": {"name": LONG_NAME[:32]}}, same),
    ("cilium-cluster-name-invalid",
     {"cluster": {"name": LONG_NAME}, **extra({"cluster": {"name": "prod-eu"}})}, same),
    ("ipam-mode-not-cluster-pool", extra({"ipam": {"mode": "cluster-pool"}}), same),
    ("migration-key-overridden", extra({"operator": {"replicas": 1}, "tunnelPort": 8473}), same),
    ("kube-proxy-replacement-enabled", extra({"kubeProxyReplacement": False}), same),
    ("api-server-in-extra-values", API_IN_SPEC, same),
    ("unsupported-cilium-mode", extra({"cni": {"chainingMode": "none"}}), same),
    ("unsupported-cilium-mode", extra({"ipv4": {"enabled": True}}), same),
    ("helm-values-invalid", extra({"hubble": {"enabled": False}}), same),
    ("helm-values-unknown-key", extra({"hubble": {"relay": {"enabled": True}}}), same),
    ("chart-data-from-other-version", {"cilium": {"version": "1.18.4"}}, same),
    ("chart-rejects-install-values", extra({"tunnel": "vxlan"}), same, rendered(final=REMOVED)),
    ("chart-rejects-final-values", {}, same, rendered(install=REMOVED, final=REMOVED)),
    ("chart-not-rendered", {}, same, rendered()),
    ("helm-values-invalid", extra({"tunnelPort": "abc"}), same, rendered(install="tunnelPort")),
    ("too-few-schedulable-nodes", {}, node_with("w1", schedulable=False)),
    ("wave-plan-invalid", {"rollout": {"firstNodes": ["w2"], "lastNodes": ["cp1"]}}, same),
    ("worker-node-stranded", {"rollout": {"maxUnavailable": 2}}, WORKER_ON_CANARY),
    ("wave-leaves-no-room", {"rollout": {"maxUnavailable": 1}}, CORDONED_W1),
    ("pdb-never-allows-eviction", {}, facts_with(pdbs=[pdb(3, 2, 2, 0), pdb(0, 0, 0, 0)])),
    ("pdb-allows-no-disruption-now", {}, facts_with(pdbs=[pdb(3, 3, 3, 0)])),
    ("drain-refuses-empty-dir-pods", {"drain": {"deleteEmptyDirData": True}},
     facts_with(pods_drain_may_refuse=[CACHE])),
    ("drain-refuses-empty-dir-pods", {}, facts_with(pods_drain_may_refuse=[STRAY])),
    ("drain-refuses-unmanaged-pods", {"drain": {"evictUnmanagedPods": True}},
     facts_with(pods_drain_may_refuse=[STRAY])),
    ("drain-refuses-unmanaged-pods", {"rollout": {"excludeNodes": ["w1"]}},
     facts_with(pods_drain_may_refuse=[STRAY])),
    ("canary-reduced-to-budget", {"rollout": {"canarySize": 2, "maxUnavailable": "67%"}}, same),
    ("no-worker-for-canary", {"rollout": {"excludeNodes": ["w1", "w2"]}}, same),
    ("node-not-ready", {"rollout": {"excludeNodes": ["w3"]}}, node_with("w3", ready=False)),
    ("node-already-labelled", {}, node_with("w2", labels={"io.cilium.migration/other": "true"})),
    ("acknowledge-invalid", {"acknowledge": ["network-policies-present"]}, same),
]


def test_a_healthy_cluster_has_no_findings() -> None:
    assert run_preflight(spec_of(), healthy_facts()) == []


def cases(table: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(rule, sections, change, chart verdict): most cases need no verdict from the chart."""
    return [case if len(case) == 4 else (*case, None) for case in table]


@pytest.mark.parametrize(("rule", "sections", "change", "chart"), cases(TRIGGERS))
def test_rule_fires(rule: str, sections: dict[str, Any], change: FactsChange,
                    chart: ChartVerdict) -> None:
    fired = [finding for finding in findings_for(sections, change, chart)
             if finding.id == rule]
    assert fired, f"{rule} did not fire"
    severity = {entry.id: entry.severity for entry in RULES}[rule]
    assert all(finding.severity == severity for finding in fired)
    assert all(finding.message and finding.remedy for finding in fired)


@pytest.mark.parametrize(("rule", "sections", "change", "chart"), cases(NEAR_MISSES))
def test_rule_stays_quiet(rule: str, sections: dict[str, Any], change: FactsChange,
                          chart: ChartVerdict) -> None:
    assert rule not in {finding.id for finding in findings_for(sections, change, chart)}


def test_every_rule_has_a_trigger_and_a_near_miss() -> None:
    assert {case[0] for case in TRIGGERS} == set([rule.id for rule in RULES])
    assert {case[0] for case in NEAR_MISSES} == set([rule.id for rule in RULES])


def test_rule_ids_are_unique_and_documented() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    assert all(rule.summary and rule.summary != rule.id for rule in RULES)


def test_findings_name_what_they_are_about() -> None:
    [stranded] = [
        finding
        for finding in findings_for({"rollout": {"maxUnavailable": 2}}, COLLISION)
        if finding.id == "worker-node-stranded"
    ]
    assert stranded.subject == "w2" and "Wave 2" in stranded.message
    [budget] = findings_for({}, facts_with(pdbs=[pdb(3, 3, 3, 0)]))
    assert budget.subject == "db/postgres" and "3 healthy of 3" in budget.message
    [port] = findings_for({"network": {"tunnelPort": 8472}}, same)
    assert "UDP port 8472" in port.message


def test_pods_the_drain_would_refuse_are_named_with_their_node_and_the_setting() -> None:
    both_kinds = {**CACHE, "name": "cache-1", "node": "w3", "unmanaged": True,
                  "empty_dirs": ["a", "b"]}
    findings = findings_for({}, facts_with(pods_drain_may_refuse=[CACHE, STRAY, both_kinds]))
    by_id = {finding.id: finding for finding in findings}
    local = by_id["drain-refuses-empty-dir-pods"]
    assert local.severity == "warning"
    assert "2 pod(s)" in local.message
    assert "shop/cache-0 on w2 (scratch), shop/cache-1 on w3 (a, b)" in local.message
    assert "drain.deleteEmptyDirData: true" in local.remedy
    unmanaged = by_id["drain-refuses-unmanaged-pods"]
    assert "default/debug on w1, shop/cache-1 on w3" in unmanaged.message
    assert "drain.evictUnmanagedPods: true" in unmanaged.remedy
    # Allowing one kind leaves the other named.
    allowed = findings_for({"drain": {"deleteEmptyDirData": True}},
                           facts_with(pods_drain_may_refuse=[CACHE, both_kinds]))
    assert [f.id for f in allowed] == ["drain-refuses-unmanaged-pods"]
    assert "shop/cache-1 on w3" in allowed[0].message


def test_a_cluster_name_too_long_for_cilium_blocks_and_says_how_long() -> None:
    [finding] = [f for f in findings_for({"cluster": {"name": LONG_NAME}}, same)
                 if f.id == "cilium-cluster-name-invalid"]
    assert finding.severity == "blocking" and finding.subject == "cluster.name"
    assert f"'{LONG_NAME}', 34 characters long" in finding.message
    assert "longer than 32" in finding.message
    assert "cilium.extraValues.cluster.name" in finding.remedy


def test_facts_recorded_before_pods_were_still_read() -> None:
    """ClusterFacts from an older discovery (a recorded history) have no pods: none refused."""
    old = healthy_facts().model_dump()
    del old["pods_drain_may_refuse"]
    assert ClusterFacts.model_validate(old).pods_drain_may_refuse == []


def test_acknowledged_warnings_stay_listed_but_no_longer_hold_the_run() -> None:
    policies = facts_with(network_policies=[{"namespace": "a", "name": "b"}])
    pending = findings_for({}, policies)
    assert [finding.id for finding in unacknowledged(pending)] == ["network-policies-present"]
    accepted = findings_for({"acknowledge": ["network-policies-present"]}, policies)
    assert [(finding.id, finding.acknowledged) for finding in accepted] == [
        ("network-policies-present", True)
    ]
    assert unacknowledged(accepted) == [] and blocking(accepted) == []


def test_blocking_findings_cannot_be_acknowledged() -> None:
    findings = findings_for(
        {"acknowledge": ["kube-proxy-absent"]}, facts_with(kube_proxy_present=False)
    )
    [absent] = blocking(findings)
    assert absent.id == "kube-proxy-absent" and not absent.acknowledged


def test_without_kube_proxy_an_unknown_api_server_blocks_beside_kube_proxy_absent() -> None:
    notes = ["kube-system/kube-proxy kubeconfig.conf: not YAML (oops)"]
    unknown = both(NO_WAY_TO_API, facts_with(api_endpoint_notes=notes))
    assert [f.id for f in blocking(findings_for({}, unknown))] == [
        "kube-proxy-absent", "api-server-unknown"]
    [finding] = [f for f in findings_for({}, unknown) if f.id == "api-server-unknown"]
    assert "not YAML (oops)" in finding.message
    assert "cilium.k8sServiceHost" in finding.remedy
    # The spec's address answers this finding; kube-proxy-absent stands on its own.
    assert [f.id for f in blocking(findings_for(API_IN_SPEC, unknown))] == ["kube-proxy-absent"]


def test_order_follows_the_registry_and_ignores_discovery_order() -> None:
    sections = {"network": {"tunnelPort": 8472}, **extra({"tunnelPortt": 1})}
    change = both(
        facts_with(kube_proxy_present=False, other_cnis=["weave", "calico"]),
        node_with("w3", ready=False),
        node_with("w1", ready=False),
    )
    findings = findings_for(sections, change)
    order = {rule_id: position for position, rule_id in enumerate([rule.id for rule in RULES])}
    positions = [order[finding.id] for finding in findings]
    assert positions == sorted(positions)
    shuffled_nodes = list(change(healthy_facts()).nodes)
    random.Random(7).shuffle(shuffled_nodes)
    shuffled = change(healthy_facts()).model_copy(update={"nodes": shuffled_nodes})
    assert run_preflight(spec_of(**sections), shuffled) == findings
    assert [f.subject for f in findings if f.id == "node-not-ready"] == ["w1", "w3"]
    assert [f.subject for f in findings if f.id == "other-cni-present"] == ["calico", "weave"]
