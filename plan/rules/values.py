"""Rules about the Cilium version and the Helm values that will be installed."""

from __future__ import annotations

import re
from collections.abc import Iterator

from plan.helm_values import (
    MIGRATION_KEYS,
    schema_errors,
    unknown_keys,
    value_at,
    values_data_version,
)
from plan.rules.context import Issue, RuleContext

# CiliumNodeConfig, which the per-node switch relies on, appeared in 1.13 as cilium.io/v2alpha1
# and became cilium.io/v2 in 1.16.
MINIMUM_CILIUM = (1, 13, 0)
NODE_CONFIG_V2 = (1, 16, 0)
# Cilium's own rule for cluster.name (pkg/clustermesh/types): at most 32 characters, lower case
# alphanumerics and '-', beginning and ending with an alphanumeric. The agent refuses to start
# with any other name.
CILIUM_CLUSTER_NAME_MAX = 32
_CILIUM_CLUSTER_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# Values of kubeProxyReplacement that turn it on in some Cilium version (older ones had modes).
_KPR_ON = frozenset({"true", "strict", "partial", "probe"})


def cilium_version_unsupported(ctx: RuleContext) -> Iterator[Issue]:
    """Cilium must be 1.13 or newer: older versions have no CiliumNodeConfig."""
    if ctx.spec.cilium.version_tuple < MINIMUM_CILIUM:
        yield Issue(
            f"Cilium {ctx.spec.cilium.version} has no CiliumNodeConfig, which moves nodes to "
            "Cilium one at a time.",
            "Set cilium.version to 1.16.0 or newer (1.13 at the very least).",
            ctx.spec.cilium.version,
        )


def cilium_node_config_deprecated(ctx: RuleContext) -> Iterator[Issue]:
    """Cilium before 1.16 only serves the deprecated cilium.io/v2alpha1 CiliumNodeConfig."""
    if MINIMUM_CILIUM <= ctx.spec.cilium.version_tuple < NODE_CONFIG_V2:
        yield Issue(
            f"Cilium {ctx.spec.cilium.version} serves CiliumNodeConfig only as the deprecated "
            "cilium.io/v2alpha1; the migration will use that version.",
            "Prefer cilium.version 1.16.0 or newer, or acknowledge.",
            ctx.spec.cilium.version,
        )


def cilium_cluster_name_invalid(ctx: RuleContext) -> Iterator[Issue]:
    """Cilium's cluster.name must have at most 32 characters: lower case, digits and '-'."""
    name = ctx.value("cluster.name")
    if name is None:
        return  # extraValues removed it: the chart's default ("default") applies
    source = ("cilium.extraValues sets" if name != ctx.spec.cluster.name
              else "the spec's cluster.name gives")
    remedy = (f"Set a Cilium name of at most {CILIUM_CLUSTER_NAME_MAX} characters in "
              "cilium.extraValues.cluster.name (the spec's cluster.name stays the migration's "
              "name), or shorten the spec's cluster.name.")
    if not isinstance(name, str) or not _CILIUM_CLUSTER_NAME.match(name):
        yield Issue(
            f"{source} Cilium's cluster.name {name!r}, which Cilium rejects: it takes lower case "
            "letters, digits and '-', beginning and ending with a letter or digit.",
            remedy, "cluster.name")
    elif len(name) > CILIUM_CLUSTER_NAME_MAX:
        yield Issue(
            f"{source} Cilium's cluster.name {name!r}, {len(name)} characters long; Cilium "
            f"rejects names longer than {CILIUM_CLUSTER_NAME_MAX} and its agents would not "
            "start.",
            remedy, "cluster.name")


def ipam_mode_not_cluster_pool(ctx: RuleContext) -> Iterator[Issue]:
    """IPAM mode must stay cluster-pool: the procedure depends on it and it cannot change later."""
    mode = ctx.value("ipam.mode")
    if mode != "cluster-pool":
        yield Issue(
            f"cilium.extraValues sets ipam.mode to {mode!r}; the migration needs cluster-pool, "
            "and the IPAM mode of a running cluster must never change.",
            "Remove ipam.mode from cilium.extraValues.",
            "ipam.mode",
        )


def migration_key_overridden(ctx: RuleContext) -> Iterator[Issue]:
    """extraValues must not change the values the procedure depends on."""
    for key in MIGRATION_KEYS:
        if key == "ipam.mode":
            continue  # its own rule explains why
        wanted = value_at(ctx.procedure_values, key)
        actual = ctx.value(key)
        if actual != wanted:
            yield Issue(
                f"cilium.extraValues sets {key} to {actual!r}; the migration needs {wanted!r}.",
                f"Remove {key} from cilium.extraValues (tunnel and pod CIDR settings belong in "
                "the spec's network section).",
                key,
            )


def kube_proxy_replacement_enabled(ctx: RuleContext) -> Iterator[Issue]:
    """kube-proxy replacement must stay off until the migration is finished."""
    setting = ctx.value("kubeProxyReplacement")
    if setting is True or (isinstance(setting, str) and setting.lower() in _KPR_ON):
        yield Issue(
            f"cilium.extraValues sets kubeProxyReplacement={setting!r}; turning it on during a "
            "migration broke Service load balancing for users of the procedure.",
            "Remove it; enable kube-proxy replacement in a separate change after finalize.",
            "kubeProxyReplacement",
        )


def api_server_in_extra_values(ctx: RuleContext) -> Iterator[Issue]:
    """The agents' API server address is set by cilium.k8sServiceHost/k8sServicePort only."""
    for key in ("k8sServiceHost", "k8sServicePort"):
        if key in ctx.spec.cilium.extra_values:
            yield Issue(
                f"cilium.extraValues sets {key}, over the address the plan chose and reports.",
                "Move it to cilium.k8sServiceHost and cilium.k8sServicePort.",
                key,
            )


def unsupported_cilium_mode(ctx: RuleContext) -> Iterator[Issue]:
    """Chaining, BGP and IP-family changes are untested with the dual overlay upstream."""
    chaining = ctx.value("cni.chainingMode")
    if chaining not in (None, "", "none"):
        yield _untested("cni.chainingMode", chaining, "CNI chaining")
    if ctx.value("bgpControlPlane.enabled") is True:
        yield _untested("bgpControlPlane.enabled", True, "BGP routing")
    if ctx.value("ipv6.enabled") is True:
        yield _untested("ipv6.enabled", True, "an IP-family change")
    if ctx.value("ipv4.enabled") is False:
        yield _untested("ipv4.enabled", False, "an IP-family change")


def helm_values_invalid(ctx: RuleContext) -> Iterator[Issue]:
    """Initial and final values must satisfy the chart's values.schema.json."""
    if ctx.chart_rendered:
        return  # the chart's own schema judged them (chart-rejects-*-values)
    version = ctx.spec.cilium.version
    initial = schema_errors(ctx.values, version)
    for message in initial:
        yield _schema_issue("initial", message)
    for message in schema_errors(ctx.final, version):
        if message not in initial:
            yield _schema_issue("final", message)


def helm_values_unknown_key(ctx: RuleContext) -> Iterator[Issue]:
    """Every values key should exist in the chart; Helm ignores misspelt keys silently."""
    for message in unknown_keys(ctx.values, ctx.spec.cilium.version):
        yield Issue(
            f"Helm values: {message}.",
            "Fix the key in cilium.extraValues, or acknowledge if it exists in the chart "
            "version you install.",
            message.split(":", 1)[0],
        )


def chart_data_from_other_version(ctx: RuleContext) -> Iterator[Issue]:
    """Values are checked offline against the chart data of the version installed."""
    wanted = ctx.spec.cilium.version
    used = values_data_version(wanted)
    if used != wanted:
        yield Issue(
            f"No values data for the Cilium {wanted} chart ships with cilium-migrate: the "
            f"values' keys and types were checked against the {used} chart's instead. "
            f"Rendering the {wanted} chart itself is what decides whether it accepts them.",
            "Nothing to do when the plan rendered the chart; otherwise check keys flagged "
            f"unknown against the {wanted} chart's values.yaml.",
            used,
        )


def _schema_issue(which: str, message: str) -> Issue:
    return Issue(
        f"{which} Helm values rejected by the chart schema: {message}.",
        "Fix the value in cilium.extraValues.",
        message.split(":", 1)[0],
    )


def _untested(key: str, value: object, what: str) -> Issue:
    return Issue(
        f"cilium.extraValues sets {key}={value!r}: {what} with the dual overlay is untested "
        "upstream.",
        f"Remove {key} for the migration; change it afterwards if needed.",
        key,
    )
