"""The chart's verdict in the plan: refusals block in the chart's own words, with the
extraValues key to change; a chart that could not be rendered is a warning, not a failure."""

from __future__ import annotations

from typing import Any

import pytest

from plan.chart_check import ChartNotRendered, keys_named, render_input
from plan.contract import ChartRender, InstalledChart
from plan.facts import ClusterFacts
from plan.planner import make_plan
from plan.spec import MigrationSpec
from tests.unit.test_plan_preflight import healthy_facts

REMOVED = ("tunnel was deprecated in v1.14 and has been removed in v1.15. For details please "
           "refer to https://docs.cilium.io/en/v1.15/operations/upgrade/#helm-options")
CHART = InstalledChart(name="cilium", version="1.18.4", digest="sha256:0f", source="/charts")


def spec_with(extra: dict[str, Any] | None = None, **cilium: Any) -> MigrationSpec:
    return MigrationSpec.model_validate(
        {"cluster": {"name": "prod"}, "cilium": {"extraValues": extra or {}, **cilium}})


def rendered(install: str | None = None, final: str | None = None) -> ChartRender:
    return ChartRender(chart=CHART, install_refused=install, final_refused=final)


def test_a_refused_install_value_blocks_in_the_charts_words_and_names_the_key() -> None:
    plan = make_plan(spec_with({"tunnel": "vxlan"}), healthy_facts(),
                     rendered(install=REMOVED, final=REMOVED))
    assert not plan.can_run
    [refusal] = [f for f in plan.findings if f.severity == "blocking"]
    assert refusal.id == "chart-rejects-install-values"
    assert refusal.message == f"The cilium 1.18.4 chart refuses the install values: {REMOVED}"
    assert refusal.remedy.startswith("Change or remove tunnel in cilium.extraValues")
    assert refusal.subject == "tunnel"
    assert plan.rendered_chart == CHART


def test_a_value_only_the_final_upgrade_trips_is_its_own_finding() -> None:
    plan = make_plan(spec_with({"hubble": {"relay": {"enabled": True}}}), healthy_facts(),
                     rendered(final="Hubble Relay requires .Values.hubble.enabled=true"))
    assert [(f.id, f.subject) for f in plan.findings if f.severity == "blocking"] == [
        ("chart-rejects-final-values", "hubble")]
    assert "finalize" in plan.findings[-1].message


def test_an_accepting_render_takes_over_from_the_offline_schema_check() -> None:
    """The shipped schema rejects a string for hubble.enabled; the chart rendered is the
    judge once it was asked, so the offline verdict is not repeated."""
    spec = spec_with({"hubble": {"enabled": "yes"}})
    offline = make_plan(spec, healthy_facts())
    assert "helm-values-invalid" in {f.id for f in offline.findings}
    judged = make_plan(spec, healthy_facts(), rendered(install="hubble.enabled: got string"))
    assert {f.id for f in judged.findings} == {"chart-rejects-install-values"}


def test_a_chart_that_could_not_be_rendered_is_a_warning_that_says_why() -> None:
    plan = make_plan(spec_with(), healthy_facts(),
                     ChartNotRendered(reason="cannot run helm: No such file or directory"))
    [finding] = plan.findings
    assert (finding.id, finding.severity) == ("chart-not-rendered", "warning")
    assert finding.message.endswith("judged them: cannot run helm: No such file or directory")
    assert plan.can_run and plan.warnings_to_acknowledge == ["chart-not-rendered"]
    assert plan.rendered_chart is None


def test_a_version_without_shipped_data_says_which_data_it_was_checked_against() -> None:
    plan = make_plan(spec_with(version="1.18.5"), healthy_facts(), rendered())
    [finding] = plan.findings
    assert (finding.id, finding.severity, finding.subject) == (
        "chart-data-from-other-version", "info", "1.18.4")
    assert "Cilium 1.18.5 chart" in finding.message and "1.18.4" in finding.message
    assert plan.can_run and plan.warnings_to_acknowledge == []


@pytest.mark.parametrize(("message", "extra", "keys"), [
    (REMOVED, {"tunnel": "vxlan", "tunnelPort": 8473}, ["tunnel"]),
    ("tunnelPort: got string, want integer", {"tunnelPort": "abc"}, ["tunnelPort"]),
    ("ipam.operator.clusterPoolIPv4PodCIDRList[0]: got number, want string",
     {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": [5]}}},
     ["ipam.operator.clusterPoolIPv4PodCIDRList"]),
    ("encryption.{keyFile,mountPath,secretName,interface} were deprecated",
     {"encryption": {"keyFile": "k"}}, ["encryption"]),
    ("Hubble Relay requires .Values.hubble.enabled=true",
     {"hubble": {"enabled": False, "relay": {"enabled": True}}}, ["hubble.enabled"]),
    (REMOVED, {"debug": {"enabled": True}}, []),  # the chart's complaint is not about these
])
def test_keys_named_finds_the_extra_values_a_message_is_about(
        message: str, extra: dict[str, Any], keys: list[str]) -> None:
    assert keys_named(message, extra) == keys


def test_the_render_is_asked_with_the_cluster_versions_and_both_phases_values() -> None:
    facts = ClusterFacts.model_validate({**healthy_facts().model_dump(),
                                         "server_version": "v1.35.4",
                                         "api_versions": ["apps/v1", "v1"]})
    spec = spec_with({"debug": {"enabled": True}}, chart={"path": "/charts/cilium"})
    request = render_input(spec, facts)
    assert (request.kube_version, request.api_versions) == ("v1.35.4", ["apps/v1", "v1"])
    assert (request.chart.path, request.chart.version) == ("/charts/cilium", "1.18.4")
    assert request.install_values["debug"] == {"enabled": True}
    assert request.install_values["cni"]["customConf"] is True
    assert request.final_values["cni"]["customConf"] is False


def test_facts_recorded_before_versions_were_discovered_still_read() -> None:
    old = healthy_facts().model_dump()
    del old["server_version"], old["api_versions"]
    facts = ClusterFacts.model_validate(old)
    assert (facts.server_version, facts.api_versions) == (None, [])
