"""MigrationSpec: defaults, field rules, durations, JSON round trip and the editor schema."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network

import jsonschema
import pytest
from pydantic import ValidationError

from plan.duration import format_duration, parse_duration
from plan.spec import MigrationSpec, render_command
from plan.spec_loader import spec_json_schema


def spec_of(**sections: object) -> MigrationSpec:
    document = {"cluster": {"name": "prod"}, **sections}
    return MigrationSpec.model_validate(document, by_name=False)


def error_locations(**sections: object) -> list[tuple[object, ...]]:
    with pytest.raises(ValidationError) as caught:
        spec_of(**sections)
    return [error["loc"] for error in caught.value.errors()]


def test_defaults_are_the_procedures_values() -> None:
    spec = spec_of()
    assert spec.cilium.version == "1.18.4"
    assert spec.cilium.chart.repo == "https://helm.cilium.io"
    assert spec.cilium.chart.name == "cilium"
    assert spec.cilium.namespace == "kube-system"
    assert spec.network.pod_cidrs == [IPv4Network("10.245.0.0/16")]
    assert (spec.network.tunnel_protocol, spec.network.tunnel_port) == ("vxlan", 8473)
    assert spec.rollout.canary_size == 1 and spec.rollout.max_unavailable == 1
    assert spec.approvals.policy == "per-phase" and spec.approvals.approvers == []
    assert spec.drain.timeout == timedelta(minutes=15) and spec.drain.on_timeout == "fail"
    # kubectl drain --ignore-daemonsets: emptyDir data and unmanaged pods are refused.
    assert not spec.drain.delete_empty_dir_data and not spec.drain.evict_unmanaged_pods
    assert spec.reboot.strategy == "node-shell" and spec.reboot.image == "busybox:1.37.0"
    assert spec.verify.probe_image == "busybox:1.37.0"
    assert spec.reboot.timeout == timedelta(minutes=10)
    assert spec.verify.checks == ["pod-ip-in-pool", "api-server", "dns", "peer-flannel",
                                  "peer-cilium"]
    assert spec.verify.timeout == timedelta(minutes=2)
    # The echo mesh and its monitor are on; one failed request within a minute halts.
    connectivity = spec.connectivity
    assert connectivity.enabled and connectivity.namespace == "cilium-migrate-echo"
    assert connectivity.echo_image == "registry.k8s.io/e2e-test-images/agnhost:2.59"
    assert (connectivity.max_failed_requests, connectivity.window) == (0, timedelta(minutes=1))
    assert spec.finalize.host_legacy_routing is False and spec.finalize.remove_flannel is True


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("1d", 86400), (45, 45), ("15", 15)],
)
def test_durations_parse(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", [0, -5, "0s", "-1m", "m", "1.5h", "15 minutes", True, 1.5, None])
def test_durations_reject_nonsense(bad: object) -> None:
    with pytest.raises(ValueError, match="duration|at most"):
        parse_duration(bad)


def test_durations_are_capped() -> None:
    with pytest.raises(ValueError, match="at most 7d"):
        parse_duration(10**30)
    with pytest.raises(ValueError, match="at most 7d"):
        parse_duration("8d")


@pytest.mark.parametrize("seconds", [1, 59, 61, 3600, 3661, 86400 + 5])
def test_duration_format_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(timedelta(seconds=seconds))).total_seconds() == seconds


def test_spec_survives_a_json_round_trip() -> None:
    # Temporal carries the spec as JSON; the copy must equal the original, durations included.
    spec = spec_of(
        drain={"timeout": "1h30m"},
        cilium={"chart": {"path": "/charts/cilium"}, "extraValues": {"a": {"b": [1, "x"]}}},
        reboot={"strategy": "command", "command": ["ssh", "{node}", "sudo", "reboot"]},
        rollout={"maxUnavailable": "25%"},
    )
    payload = spec.model_dump_json()
    assert '"timeout":"1h30m"' in payload
    assert MigrationSpec.model_validate_json(payload) == spec


def test_python_code_may_use_snake_case_names() -> None:
    spec = MigrationSpec.model_validate({"cluster": {"name": "a", "in_cluster": True}})
    assert spec.cluster.in_cluster is True


@pytest.mark.parametrize(
    ("sections", "location"),
    [
        ({"cluster": {"name": "Prod_1"}}, ("cluster", "name")),
        (
            {"cluster": {"name": "a", "inCluster": True, "kubeconfigContext": "x"}},
            ("cluster", "inCluster"),
        ),
        ({"network": {"podCIDRs": ["10.245.0.1/16"]}}, ("network", "podCIDRs", 0)),
        ({"network": {"podCIDRs": ["fd00::/64"]}}, ("network", "podCIDRs", 0)),
        ({"network": {"podCIDRs": ["10.0.0.0/8", "10.1.0.0/16"]}}, ("network", "podCIDRs")),
        ({"network": {"podCIDRs": []}}, ("network", "podCIDRs")),
        ({"network": {"tunnelPort": 0}}, ("network", "tunnelPort")),
        ({"network": {"tunnelPort": 70000}}, ("network", "tunnelPort")),
        ({"network": {"tunnelPort": True}}, ("network", "tunnelPort")),
        ({"network": {"tunnelProtocol": "gre"}}, ("network", "tunnelProtocol")),
        ({"rollout": {"canarySize": 0}}, ("rollout", "canarySize")),
        ({"rollout": {"maxUnavailable": 0}}, ("rollout", "maxUnavailable")),
        ({"rollout": {"maxUnavailable": "0%"}}, ("rollout", "maxUnavailable")),
        ({"rollout": {"maxUnavailable": "101%"}}, ("rollout", "maxUnavailable")),
        ({"rollout": {"firstNodes": ["a", "a"]}}, ("rollout", "firstNodes")),
        ({"rollout": {"firstNodes": ["a"], "lastNodes": ["a"]}}, ("rollout", "lastNodes")),
        ({"rollout": {"lastNodes": ["a"], "excludeNodes": ["a"]}}, ("rollout", "excludeNodes")),
        ({"approvals": {"policy": "sometimes"}}, ("approvals", "policy")),
        ({"drain": {"timeout": "0s"}}, ("drain", "timeout")),
        ({"drain": {"gracePeriodSeconds": -1}}, ("drain", "gracePeriodSeconds")),
        ({"drain": {"onTimeout": "delete"}}, ("drain", "onTimeout")),
        ({"reboot": {"strategy": "command"}}, ("reboot", "command")),
        ({"reboot": {"command": ["ssh", "{node}"]}}, ("reboot", "command")),
        ({"reboot": {"strategy": "command", "command": ["reboot"]}}, ("reboot", "command")),
        ({"reboot": {"strategy": "command", "command": ["ssh", "{host}"]}}, ("reboot", "command")),
        ({"reboot": {"strategy": "command", "command": ["ssh", "{node"]}}, ("reboot", "command")),
        ({"verify": {"checks": ["ping"]}}, ("verify", "checks", 0)),
        ({"connectivity": {"namespace": "kube-system"}}, ("connectivity", "namespace")),
        ({"connectivity": {"interval": "2m"}}, ("connectivity",)),
        ({"connectivity": {"maxFailedRequests": -1}}, ("connectivity", "maxFailedRequests")),
        ({"cilium": {"namespace": "cilium"}, "connectivity": {"namespace": "cilium"}}, ()),
        ({"verify": {"checks": []}}, ("verify", "checks")),
        ({"cilium": {"version": "v1.18.4"}}, ("cilium", "version")),
        ({"cilium": {"chart": {"repo": "ftp://x"}}}, ("cilium", "chart", "repo")),
        ({"cilium": {"chart": {"repo": "https://x", "path": "/c"}}}, ("cilium", "chart")),
        ({"cilium": {"extraValues": {"a": float("nan")}}}, ("cilium", "extraValues")),
        ({"cilium": {"extraValues": {"a": {1: "b"}}}}, ("cilium", "extraValues")),
        ({"cilium": {"k8sServiceHost": "https://cp:6443", "k8sServicePort": 6443}},
         ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "cp:6443", "k8sServicePort": 6443}},
         ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "[2001:db8::1]", "k8sServicePort": 6443}},
         ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "256.1.1.1", "k8sServicePort": 6443}},
         ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "cp_1.internal", "k8sServicePort": 6443}},
         ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "", "k8sServicePort": 6443}}, ("cilium", "k8sServiceHost")),
        ({"cilium": {"k8sServiceHost": "cp", "k8sServicePort": 0}}, ("cilium", "k8sServicePort")),
        ({"cilium": {"k8sServiceHost": "cp", "k8sServicePort": "6443"}},
         ("cilium", "k8sServicePort")),
        ({"cilium": {"k8sServiceHost": "cp"}}, ("cilium",)),
        ({"cilium": {"k8sServicePort": 6443}}, ("cilium",)),
        ({"finalize": {"removeFlannel": "yes please"}}, ("finalize", "removeFlannel")),
        ({"rollout": {"oneZone": True}}, ("rollout", "oneZone")),
    ],
)
def test_invalid_fields_are_reported_where_they_are(
    sections: dict[str, object], location: tuple[object, ...]
) -> None:
    assert location in error_locations(**sections)


def test_valid_alternatives_are_accepted() -> None:
    spec = spec_of(
        cluster={"name": "edge-1", "inCluster": True},
        cilium={"chart": {"repo": "oci://registry.example/charts", "name": "cilium"}},
        network={"podCIDRs": ["10.245.0.0/16", "10.246.0.0/16"], "tunnelProtocol": "geneve"},
        rollout={"maxUnavailable": "100%", "firstNodes": ["a"], "excludeNodes": ["b"]},
        reboot={"strategy": "command", "command": ["ssh", "root@{ip}", "reboot"]},
        verify={"checks": ["api-server"]},
    )
    assert spec.cilium.chart.repo == "oci://registry.example/charts"
    assert spec.rollout.max_unavailable == "100%"
    template = spec.reboot.command or []
    assert render_command(template, "n1", "10.0.0.7") == ["ssh", "root@10.0.0.7", "reboot"]
    with pytest.raises(ValueError, match="no internal IP"):
        render_command(spec.reboot.command or [], "n1", None)


def test_local_chart_has_no_repository() -> None:
    chart = spec_of(cilium={"chart": {"path": "./chart"}}).cilium.chart
    assert chart.repo is None
    assert (
        spec_of(cilium={"chart": {"name": "cilium"}}).cilium.chart.repo == "https://helm.cilium.io"
    )


def test_json_schema_is_valid_and_matches_the_model() -> None:
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    full = spec_of(rollout={"maxUnavailable": "25%"}).model_dump(mode="json", exclude_none=True)
    assert list(validator.iter_errors(full)) == []
    assert not validator.is_valid({"cluster": {"name": "a"}, "netwrok": {}})
    assert not validator.is_valid({"cluster": {"name": "a"}, "network": {"tunnelPort": "x"}})
    assert not validator.is_valid({"cluster": {"name": "a"}, "drain": {"timeout": "soon"}})
    assert "podCIDRs" in schema["$defs"]["NetworkSpec"]["properties"]


@pytest.mark.parametrize("host", ["192.0.2.10", "2001:db8::10", "cp-1", "API.example.internal"])
def test_the_api_server_for_agents_takes_a_host_name_or_ip_and_a_port(host: str) -> None:
    cilium = spec_of(cilium={"k8sServiceHost": host, "k8sServicePort": 6443}).cilium
    assert (cilium.k8s_service_host, cilium.k8s_service_port) == (host, 6443)
    assert spec_of().cilium.k8s_service_host is None  # default: what the cluster publishes
