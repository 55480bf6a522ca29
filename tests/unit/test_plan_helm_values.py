"""Helm values: the procedure's values, the final switch, the diff, and the chart's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from plan import helm_values
from plan.facts import ApiEndpoint, ClusterFacts, NodeFacts
from plan.helm_values import (
    final_values,
    flatten,
    initial_values,
    merge_values,
    schema_errors,
    shipped_versions,
    unknown_keys,
    value_at,
    values_data_version,
    values_diff,
)
from plan.spec import DEFAULT_CILIUM_VERSION, MigrationSpec
from tests.conftest import CHART

# The chart the sandbox fetches (sandbox/cilium_release.py): the one the default spec installs.
REFERENCE = CHART
VERSION = DEFAULT_CILIUM_VERSION
PACKAGED = Path(__file__).resolve().parents[2] / "plan" / "data" / f"cilium-{VERSION}"

# Phase 1 of docs/procedure.md, verbatim.
PROCEDURE_VALUES = yaml.safe_load(
    """
operator: {unmanagedPodWatcher: {restart: false}}
routingMode: tunnel
tunnelProtocol: vxlan
tunnelPort: 8473
cni: {customConf: true, uninstall: false}
ipam: {mode: cluster-pool, operator: {clusterPoolIPv4PodCIDRList: ["10.245.0.0/16"]}}
policyEnforcementMode: never
bpf: {hostLegacyRouting: true}
"""
)



def validate_values(values: dict[str, Any]) -> list[str]:
    """Every problem the chart would have with ``values``: wrong types, then unknown keys."""
    return schema_errors(values, VERSION) + unknown_keys(values, VERSION)

def spec_with(**sections: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": "prod"}, **sections}, by_name=False)


FACTS = ClusterFacts(
    nodes=[NodeFacts(name="w1")],
    api_endpoint=ApiEndpoint(host="cp.example.internal", port=6443, source="kube-proxy"),
)


def test_initial_values_with_defaults_are_the_procedures_values() -> None:
    rendered = initial_values(spec_with(), FACTS)
    expected = {
        **PROCEDURE_VALUES,
        "cluster": {"name": "prod"},
        "k8sServiceHost": "cp.example.internal",
        "k8sServicePort": 6443,
    }
    assert rendered == expected


def test_with_no_published_api_server_the_agents_use_the_kubernetes_service() -> None:
    # kube-proxy carries the Service: k8sServiceHost/Port stay unset, nothing is guessed.
    facts = FACTS.model_copy(update={"api_endpoint": None})
    rendered = initial_values(spec_with(), facts)
    assert rendered == {**PROCEDURE_VALUES, "cluster": {"name": "prod"}}
    assert "k8sServiceHost" not in final_values(spec_with(), facts)


def test_the_published_api_server_stays_in_the_final_values() -> None:
    final = final_values(spec_with(), FACTS)
    assert (final["k8sServiceHost"], final["k8sServicePort"]) == ("cp.example.internal", 6443)
    assert validate_values(initial_values(spec_with(), FACTS)) == []


def test_the_specs_api_server_wins_over_the_published_one_and_stays_in_the_final_values() -> None:
    spec = spec_with(cilium={"k8sServiceHost": "10.0.0.5", "k8sServicePort": 16443})
    for values in (initial_values(spec, FACTS), final_values(spec, FACTS)):
        assert (values["k8sServiceHost"], values["k8sServicePort"]) == ("10.0.0.5", 16443)
    assert validate_values(initial_values(spec, FACTS)) == []


def test_final_values_switch_exactly_the_procedures_four_keys() -> None:
    spec = spec_with()
    diff = values_diff(initial_values(spec, FACTS), final_values(spec, FACTS))
    assert diff == [
        ("bpf.hostLegacyRouting", True, False),
        ("cni.customConf", True, False),
        ("operator.unmanagedPodWatcher.restart", False, True),
        ("policyEnforcementMode", "never", "default"),
    ]


def test_final_values_keep_ipam_and_tunnel_settings() -> None:
    spec = spec_with(
        network={"podCIDRs": ["10.50.0.0/16"], "tunnelProtocol": "geneve", "tunnelPort": 9000},
        finalize={"hostLegacyRouting": True},
    )
    final = final_values(spec, FACTS)
    assert value_at(final, "ipam.mode") == "cluster-pool"
    assert value_at(final, "ipam.operator.clusterPoolIPv4PodCIDRList") == ["10.50.0.0/16"]
    assert (final["tunnelProtocol"], final["tunnelPort"]) == ("geneve", 9000)
    assert value_at(final, "bpf.hostLegacyRouting") is True


def test_extra_values_merge_deeply_and_null_deletes() -> None:
    spec = spec_with(
        cilium={"extraValues": {"operator": {"replicas": 1}, "hubble": {"enabled": False}}}
    )
    rendered = initial_values(spec, FACTS)
    assert rendered["operator"] == {"unmanagedPodWatcher": {"restart": False}, "replicas": 1}
    assert rendered["hubble"] == {"enabled": False}
    assert "bpf" not in merge_values(rendered, {"bpf": None})
    assert rendered["bpf"] == {"hostLegacyRouting": True}  # merging never mutates its inputs


def test_diff_reports_added_and_removed_keys() -> None:
    assert values_diff({"a": {"b": 1}, "gone": 2}, {"a": {"b": 1, "c": None}}) == [
        ("a.c", None, None),
        ("gone", 2, None),
    ]


def test_dotted_keys_escape_dots_in_names() -> None:
    values = {"podAnnotations": {"example.com/team": "net"}}
    assert flatten(values) == {"podAnnotations.example\\.com/team": "net"}
    assert value_at(values, "podAnnotations.example\\.com/team") == "net"


@pytest.mark.parametrize("render", [initial_values, final_values])
def test_rendered_values_pass_the_real_chart_schema(render: Any) -> None:
    schema = yaml.safe_load((REFERENCE / "values.schema.json").read_text())
    rendered = render(spec_with(), FACTS)
    jsonschema.validate(rendered, schema)  # the reference copy, not the packaged one
    assert validate_values(rendered) == []


def test_packaged_chart_data_is_the_fetched_chart_byte_for_byte() -> None:
    assert (REFERENCE / "Chart.yaml").is_file(), "fetch the chart: cilium-migrate sandbox build"
    for name in ("values.schema.json", "values.yaml"):
        assert (PACKAGED / name).read_bytes() == (REFERENCE / name).read_bytes()


def test_the_default_version_ships_its_own_chart_data() -> None:
    assert VERSION in shipped_versions()
    assert values_data_version(VERSION) == VERSION


@pytest.mark.parametrize(("wanted", "used"), [
    ("1.17.2", "1.17.2"),  # shipped: its own
    ("1.17.9", "1.17.2"),  # same minor first
    ("1.18.0", "1.18.4"),
    ("1.19.1", "1.18.4"),  # newer than anything shipped: the newest
    ("1.19.0-pre.1", "1.18.4"),
    ("1.14.0", "1.16.5"),  # older than anything shipped: the oldest
    ("1.18.6", "1.18.4"),  # equally near 1.18.4 and 1.18.8: the older one
])
def test_a_version_without_data_uses_the_nearest_shipped_one(
        monkeypatch: pytest.MonkeyPatch, wanted: str, used: str) -> None:
    monkeypatch.setattr(helm_values, "shipped_versions",
                        lambda: ("1.16.5", "1.17.2", "1.18.4", "1.18.8"))
    assert values_data_version(wanted) == used


def test_values_of_an_unshipped_version_are_checked_against_the_nearest_data() -> None:
    assert unknown_keys({"tunnelPortt": 1}, "1.18.99") == unknown_keys({"tunnelPortt": 1}, VERSION)
    assert schema_errors({"tunnelPort": "abc"}, "1.18.99") == [
        "tunnelPort: 'abc' is not of type 'integer'"]


def test_wrong_type_is_reported_with_its_key() -> None:
    rendered = initial_values(spec_with(cilium={"extraValues": {"tunnelPort": "abc"}}), FACTS)
    assert validate_values(rendered) == ["tunnelPort: 'abc' is not of type 'integer'"]


def test_nested_wrong_type_uses_the_dotted_path() -> None:
    problems = validate_values({"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": [5]}}})
    assert len(problems) == 1
    assert problems[0].startswith("ipam.operator.clusterPoolIPv4PodCIDRList[0]: ")


def test_misspelt_key_is_unknown_with_a_hint() -> None:
    rendered = initial_values(spec_with(cilium={"extraValues": {"tunnelPortt": 8473}}), FACTS)
    assert validate_values(rendered) == [
        "tunnelPortt: not a key of the Cilium chart (did you mean tunnelPort?)"
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"bpf": {"hostLegacyRoutin": True}},
            "bpf.hostLegacyRoutin: not a key of the Cilium chart (did you mean hostLegacyRouting?)",
        ),
        (
            {"hostLegacyRouting": True},
            "hostLegacyRouting: not a key of the Cilium chart "
            "(did you mean bpf.hostLegacyRouting?)",
        ),
        ({"zzzzqqq": 1}, "zzzzqqq: not a key of the Cilium chart"),
    ],
)
def test_unknown_keys_hint_siblings_then_other_sections(
    values: dict[str, Any], expected: str
) -> None:
    assert unknown_keys(values, VERSION) == [expected]


def test_free_form_maps_accept_any_key() -> None:
    values = {
        "extraConfig": {"anything-goes": "1"},
        "podAnnotations": {"example.com/x": "y"},
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "operator": {"resources": {"limits": {"cpu": "1"}}, "updateStrategy": {"x": 1}},
        "bpf": {"masquerade": True},  # null default: any value
        "global": {"whatever": True},  # named only in the schema
    }
    assert unknown_keys(values, VERSION) == []


def test_every_default_key_is_known() -> None:
    # The chart's own defaults can never be "unknown": guards the key-tree derivation.
    defaults = yaml.safe_load((REFERENCE / "values.yaml").read_text())
    assert unknown_keys(defaults, VERSION) == []
    assert validate_values(defaults) == []
