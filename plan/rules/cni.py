"""Rules about the networking software already in the cluster."""

from __future__ import annotations

from collections.abc import Iterator

from plan.api_endpoint import agent_api_endpoint
from plan.rules.context import Issue, RuleContext, some_of


def old_cni_not_flannel(ctx: RuleContext) -> Iterator[Issue]:
    """The cluster must run flannel: the only CNI this tool migrates from."""
    if ctx.facts.flannel is None:
        yield Issue(
            "No flannel DaemonSet and net-conf.json were found; this tool migrates from flannel "
            "only.",
            "Check that flannel runs (kube-flannel or kube-system namespace), or migrate with "
            "the upstream guide for your CNI.",
        )


def other_cni_present(ctx: RuleContext) -> Iterator[Issue]:
    """No other CNI (or policy provider such as Calico in canal) may run beside flannel."""
    for name in sorted(ctx.facts.other_cnis):
        yield Issue(
            f"{name} is installed as well as flannel; a third network or policy agent during "
            "the dual-overlay phase is untested and may rewrite routes.",
            f"Remove {name} before migrating.",
            name,
        )


def cilium_already_installed(ctx: RuleContext) -> Iterator[Issue]:
    """An existing Cilium install will be upgraded in place with the migration values."""
    existing = ctx.facts.existing_cilium
    if existing is None:
        return
    version = existing.version or "unknown version"
    release = f"Helm release {existing.release}" if existing.release else "not installed by Helm"
    yield Issue(
        f"Cilium ({version}, {release}) already runs in namespace {existing.namespace}.",
        "If it is left over from an earlier run of this tool, acknowledge; otherwise remove it "
        "first, since the install step replaces its values.",
        existing.namespace,
    )


def network_policies_present(ctx: RuleContext) -> Iterator[Issue]:
    """NetworkPolicies are not enforced between Cilium install and finalize."""
    policies = sorted(str(policy) for policy in ctx.facts.network_policies)
    if not policies:
        return
    yield Issue(
        f"NetworkPolicies exist ({len(policies)}: {some_of(policies, 10)}); Cilium runs with "
        "policyEnforcementMode=never until finalize, so they are not enforced on migrated nodes.",
        "Acknowledge if an unenforced window is acceptable.",
    )


def kube_proxy_absent(ctx: RuleContext) -> Iterator[Issue]:
    """kube-proxy must run: Cilium's kube-proxy replacement stays off during migration."""
    if not ctx.facts.kube_proxy_present:
        yield Issue(
            "kube-proxy was not found. The migration keeps Cilium's kube-proxy replacement off, "
            "so migrated nodes would have no Service load balancing at all.",
            "Run kube-proxy for the migration; turn kube-proxy replacement on after finalize.",
        )


def api_server_unknown(ctx: RuleContext) -> Iterator[Issue]:
    """Agents need a way to the API server: a known node-visible address, or kube-proxy."""
    facts = ctx.facts
    if facts.kube_proxy_present or agent_api_endpoint(ctx.spec, facts) is not None:
        return
    ignored = f" (unusable: {'; '.join(facts.api_endpoint_notes)})" if facts.api_endpoint_notes \
        else ""
    yield Issue(
        "No address where the nodes reach the API server is known: neither kubeadm's kube-proxy "
        f"ConfigMap nor the cluster-info ConfigMap names one{ignored}, and without kube-proxy the "
        "agents cannot use the kubernetes Service. The client's kubeconfig URL is not used: "
        "nodes need not reach it.",
        "Set cilium.k8sServiceHost and cilium.k8sServicePort to the API server as the nodes "
        "reach it (a control-plane IP or load balancer, usually port 6443), or run kube-proxy.",
    )
