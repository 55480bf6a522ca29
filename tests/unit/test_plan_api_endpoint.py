"""Where the agents reach the API server: the spec, else what the cluster publishes, else the
kubernetes Service through kube-proxy; and the plan says which."""

from __future__ import annotations

from typing import Any

import pytest

from plan.api_endpoint import agent_api_endpoint, describe_agent_api_endpoint
from plan.facts import ApiEndpoint, ClusterFacts, NodeFacts
from plan.planner import make_plan
from plan.spec import MigrationSpec

PUBLISHED = ApiEndpoint(host="192.0.2.10", port=6443, source="kube-proxy")
IN_SPEC = {"cilium": {"k8sServiceHost": "10.0.0.5", "k8sServicePort": 16443}}


def spec_of(**sections: Any) -> MigrationSpec:
    return MigrationSpec.model_validate({"cluster": {"name": "prod"}, **sections}, by_name=False)


def facts_of(endpoint: ApiEndpoint | None, kube_proxy: bool = True) -> ClusterFacts:
    return ClusterFacts(nodes=[NodeFacts(name="w1")], api_endpoint=endpoint,
                        kube_proxy_present=kube_proxy)


@pytest.mark.parametrize(("sections", "facts", "line"), [
    ({}, facts_of(PUBLISHED), "192.0.2.10:6443 (kube-proxy ConfigMap)"),
    ({}, facts_of(PUBLISHED.model_copy(update={"source": "cluster-info", "host": "2001:db8::1"})),
     "[2001:db8::1]:6443 (cluster-info ConfigMap)"),
    (IN_SPEC, facts_of(PUBLISHED), "10.0.0.5:16443 (spec)"),
    ({}, facts_of(None), "unset: agents use the kubernetes Service through kube-proxy"),
    ({}, facts_of(None, kube_proxy=False),
     "unknown: nothing publishes it and no kube-proxy carries the kubernetes Service"),
])
def test_the_plan_says_where_agents_reach_the_api_server_and_why(
        sections: dict[str, Any], facts: ClusterFacts, line: str) -> None:
    assert describe_agent_api_endpoint(spec_of(**sections), facts) == line


def test_the_plans_json_carries_the_address_and_its_source() -> None:
    plan = make_plan(spec_of(**IN_SPEC), facts_of(PUBLISHED))
    summary = plan.model_dump(mode="json")["facts"]
    assert summary["api_endpoint"] == {"host": "10.0.0.5", "port": 16443, "source": "spec"}
    assert summary["api_server_for_agents"] == "10.0.0.5:16443 (spec)"
    unset = make_plan(spec_of(), facts_of(None)).model_dump(mode="json")["facts"]
    assert unset["api_endpoint"] is None
    assert agent_api_endpoint(spec_of(), facts_of(None)) is None
