"""`cilium-migrate plan` against real sandboxes: the right findings and exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.kubeapi import Kube
from sandbox import cluster
from sandbox.toolchain import Toolchain
from sandbox.topology import Topology
from tests.conftest import CHART
from tests.helpers import deployment, ready_pods, wait_for

pytestmark = pytest.mark.sandbox


class PlanSandbox:
    def __init__(self, state_dir: Path, helm: Path) -> None:
        self.state_dir = state_dir
        self.kube = Kube(str(state_dir / "kubeconfig"))
        self.helm = helm  # renders the chart with the plan's values

    @property
    def api_server(self) -> str:
        """host:port where the nodes reach the API server (not the kubeconfig's 127.0.0.1)."""
        return str(Topology.load(self.state_dir / "topology.json").api_server)

    def plan(self, spec: dict[str, Any] | str, tmp: Path, *args: str
             ) -> subprocess.CompletedProcess[str]:
        path = tmp / "spec.yaml"
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        return subprocess.run(
            [sys.executable, "-m", "client.cli", "plan", "-f", str(path), "--kubeconfig",
             str(self.state_dir / "kubeconfig"), "--helm", str(self.helm), *args],
            capture_output=True, text=True, timeout=120)

    def plan_json(self, spec: dict[str, Any], tmp: Path) -> tuple[int, dict[str, Any]]:
        result = self.plan(spec, tmp, "-o", "json")
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout)


def finding_ids(plan: dict[str, Any]) -> set[str]:
    return {f["id"] for f in plan["findings"]}


@pytest.fixture(scope="module")
def healthy(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[PlanSandbox]:
    """A fresh 1 control plane + 4 worker cluster nobody else touches."""
    state_dir = tmp_path_factory.mktemp("plan") / "state"
    cluster.up(state_dir, nodes=5, control_planes=1, zones=2)
    try:
        yield PlanSandbox(state_dir, toolchain["helm"])
    finally:
        cluster.down(state_dir)


# The chart is the fetched Cilium release, rendered by the toolchain's helm.
SPEC: dict[str, Any] = {"cluster": {"name": "plan-test"}, "cilium": {"chart": {"path": str(CHART)}}}


def with_extra_values(values: dict[str, Any]) -> dict[str, Any]:
    return {**SPEC, "cilium": {**SPEC["cilium"], "extraValues": values}}


def test_a_healthy_cluster_plans_with_the_article_values(healthy: PlanSandbox,
                                                         tmp_path: Path) -> None:
    code, plan = healthy.plan_json(SPEC, tmp_path)
    assert code == 0 and plan["can_run"] and plan["findings"] == []
    values = plan["initial_values"]
    assert values["tunnelPort"] == 8473 and values["routingMode"] == "tunnel"
    assert values["ipam"] == {"mode": "cluster-pool",
                              "operator": {"clusterPoolIPv4PodCIDRList": ["10.245.0.0/16"]}}
    assert values["cni"] == {"customConf": True, "uninstall": False}
    assert values["bpf"]["hostLegacyRouting"] is True
    assert values["policyEnforcementMode"] == "never"
    assert plan["final_values"]["cni"]["customConf"] is False
    assert f"{values['k8sServiceHost']}:{values['k8sServicePort']}" == healthy.api_server
    assert plan["facts"]["api_server_for_agents"] == f"{healthy.api_server} (kube-proxy ConfigMap)"
    waves = plan["waves"]
    assert waves[0]["kind"] == "canary" and waves[-1]["nodes"] == ["cp-1"]
    assert sorted(n for w in waves for n in w["nodes"]) == ["cp-1", "worker-1", "worker-2",
                                                           "worker-3", "worker-4"]
    assert plan["rendered_chart"]["name"] == "cilium"
    assert plan["rendered_chart"]["version"] == "1.18.4"
    table = healthy.plan(SPEC, tmp_path)
    assert table.returncode == 0 and "Ready:" in table.stdout and "canary" in table.stdout
    assert "chart        cilium 1.18.4 sha256-tree:" in table.stdout
    assert f"API server   for agents: {healthy.api_server} (kube-proxy ConfigMap)" in table.stdout


@pytest.mark.parametrize("network, finding", [
    ({"tunnelPort": 8472}, "tunnel-port-collision"),
    ({"podCIDRs": ["10.244.128.0/17"]}, "pod-cidr-overlaps-old-network"),
    ({"podCIDRs": ["10.96.0.0/16"]}, "pod-cidr-overlaps-service"),
])
def test_network_choices_that_break_routing_block_the_plan(
        healthy: PlanSandbox, tmp_path: Path, network: dict[str, Any], finding: str) -> None:
    code, plan = healthy.plan_json({**SPEC, "network": network}, tmp_path)
    assert code == 2 and not plan["can_run"]
    assert finding in finding_ids(plan)
    assert next(f for f in plan["findings"] if f["id"] == finding)["severity"] == "blocking"


def test_network_policies_need_an_acknowledgement(healthy: PlanSandbox, tmp_path: Path) -> None:
    healthy.kube.create("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", {
        "metadata": {"name": "deny-all"}, "spec": {"podSelector": {}}})
    try:
        code, plan = healthy.plan_json(SPEC, tmp_path)
        assert code == 0 and plan["warnings_to_acknowledge"] == ["network-policies-present"]
        code, plan = healthy.plan_json({**SPEC, "acknowledge": ["network-policies-present"]},
                                       tmp_path)
        assert code == 0 and plan["warnings_to_acknowledge"] == []
        assert [f["acknowledged"] for f in plan["findings"]] == [True]
    finally:
        healthy.kube.delete("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/"
                            "deny-all")


def test_a_pdb_that_never_allows_eviction_blocks_the_plan(healthy: PlanSandbox,
                                                          tmp_path: Path) -> None:
    kube = healthy.kube
    kube.create("/apis/apps/v1/namespaces/default/deployments", deployment("db", 1))
    kube.create("/apis/policy/v1/namespaces/default/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})
    try:
        wait_for(lambda: ready_pods(healthy, "default", "app=db"), "db")  # type: ignore[arg-type]
        wait_for(lambda: kube.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/"
                                  "db-pdb").get("status", {}).get("expectedPods") == 1, "PDB")
        code, plan = healthy.plan_json(SPEC, tmp_path)
        assert code == 2
        finding = next(f for f in plan["findings"] if f["id"] == "pdb-never-allows-eviction")
        assert "default/db-pdb" in finding["message"]
        assert plan["facts"]["pdbs_blocking_now"] == ["default/db-pdb"]
    finally:
        kube.delete("/apis/policy/v1/namespaces/default/poddisruptionbudgets/db-pdb")
        kube.delete("/apis/apps/v1/namespaces/default/deployments/db")


def test_the_plan_names_pods_the_drain_would_refuse(healthy: PlanSandbox,
                                                   tmp_path: Path) -> None:
    """`kubectl drain --ignore-daemonsets` defaults: emptyDir data and bare pods are refused."""
    kube = healthy.kube
    cache = deployment("cache", 1)
    cache["spec"]["template"]["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    kube.create("/apis/apps/v1/namespaces/default/deployments", cache)
    kube.create("/api/v1/namespaces/default/pods", {
        "metadata": {"name": "debug"},
        "spec": {"containers": [{"name": "sh", "image": "busybox"}]}})
    try:
        wait_for(lambda: ready_pods(healthy, "default", "app=cache"), "cache")  # type: ignore[arg-type]
        wait_for(lambda: kube.get("/api/v1/namespaces/default/pods/debug").get(
            "spec", {}).get("nodeName"), "debug to be scheduled")
        code, plan = healthy.plan_json(SPEC, tmp_path)
        assert code == 0 and plan["warnings_to_acknowledge"] == [
            "drain-refuses-empty-dir-pods", "drain-refuses-unmanaged-pods"]
        messages = {f["id"]: f["message"] for f in plan["findings"]}
        assert "default/cache-" in messages["drain-refuses-empty-dir-pods"]
        assert "(scratch)" in messages["drain-refuses-empty-dir-pods"]
        assert "default/debug on worker-" in messages["drain-refuses-unmanaged-pods"]
        table = healthy.plan(SPEC, tmp_path)
        assert "drain.deleteEmptyDirData: true" in table.stdout

        allowed = {**SPEC, "drain": {"deleteEmptyDirData": True, "evictUnmanagedPods": True}}
        code, plan = healthy.plan_json(allowed, tmp_path)
        assert code == 0 and plan["findings"] == []
    finally:
        kube.delete("/apis/apps/v1/namespaces/default/deployments/cache")
        kube.delete("/api/v1/namespaces/default/pods/debug", {"gracePeriodSeconds": 0})
        wait_for(lambda: not [p for p in kube.get("/api/v1/namespaces/default/pods")["items"]
                              if p["metadata"]["name"] == "debug"
                              or p["metadata"]["name"].startswith("cache-")],
                 "the pods to go")


KUBE_PROXY_CONFIG = "/api/v1/namespaces/kube-system/configmaps/kube-proxy"
CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"


def test_the_plan_says_where_agents_reach_the_api_server_and_from_which_source(
        healthy: PlanSandbox, tmp_path: Path) -> None:
    in_spec = {**SPEC, "cilium": {**SPEC["cilium"], "k8sServiceHost": "cp.example.internal",
                                  "k8sServicePort": 16443}}
    code, plan = healthy.plan_json(in_spec, tmp_path)
    assert code == 0
    assert plan["facts"]["api_server_for_agents"] == "cp.example.internal:16443 (spec)"
    assert plan["initial_values"]["k8sServiceHost"] == "cp.example.internal"

    kube = healthy.kube
    saved = {path: kube.get(path) for path in (KUBE_PROXY_CONFIG, CLUSTER_INFO)}
    try:
        kube.patch(KUBE_PROXY_CONFIG, {"data": {"kubeconfig.conf": "clusters: ["}})
        code, plan = healthy.plan_json(SPEC, tmp_path)
        assert code == 0
        assert plan["facts"]["api_server_for_agents"] == (
            f"{healthy.api_server} (cluster-info ConfigMap)")
        table = healthy.plan(SPEC, tmp_path).stdout
        assert "not used: kube-system/kube-proxy kubeconfig.conf: not YAML" in table

        kube.delete(KUBE_PROXY_CONFIG)
        kube.delete(CLUSTER_INFO)
        code, plan = healthy.plan_json(SPEC, tmp_path)
        assert code == 0 and plan["facts"]["api_endpoint"] is None
        assert plan["facts"]["api_server_for_agents"] == (
            "unset: agents use the kubernetes Service through kube-proxy")
        assert "k8sServiceHost" not in plan["initial_values"]
        assert "k8sServicePort" not in plan["final_values"]
    finally:
        for path, original in saved.items():
            kube.delete(path)
            kube.create(path.rsplit("/", 1)[0], {
                "metadata": {"name": original["metadata"]["name"]}, "data": original["data"]})


def test_a_single_node_cluster_cannot_be_drained(toolchain: Toolchain, tmp_path: Path) -> None:
    state_dir = tmp_path / "single"
    cluster.up(state_dir, nodes=1, control_planes=0)
    try:
        code, plan = PlanSandbox(state_dir, toolchain["helm"]).plan_json(SPEC, tmp_path)
    finally:
        cluster.down(state_dir)
    assert code == 2 and "too-few-schedulable-nodes" in finding_ids(plan)


# The fetched 1.18.4 chart's templates/validate.yaml, word for word.
TUNNEL_REMOVED = ("tunnel was deprecated in v1.14 and has been removed in v1.15. For details "
                  "please refer to https://docs.cilium.io/en/v1.15/operations/upgrade/"
                  "#helm-options")


def test_a_value_the_chart_refuses_blocks_the_plan_in_the_charts_own_words(
        healthy: PlanSandbox, tmp_path: Path) -> None:
    spec = with_extra_values({"tunnel": "vxlan"})
    code, plan = healthy.plan_json(spec, tmp_path)
    assert code == 2 and not plan["can_run"]
    refusal = next(f for f in plan["findings"] if f["id"] == "chart-rejects-install-values")
    assert refusal["severity"] == "blocking"
    assert refusal["message"] == f"The cilium 1.18.4 chart refuses the install values: " \
                                 f"{TUNNEL_REMOVED}"
    assert refusal["remedy"].startswith("Change or remove tunnel in cilium.extraValues")
    table = healthy.plan(spec, tmp_path)
    assert table.returncode == 2 and "Traceback" not in table.stderr
    assert TUNNEL_REMOVED in table.stdout and "BLOCKED" in table.stdout


def test_a_value_of_the_wrong_type_is_reported_at_its_schema_path(
        healthy: PlanSandbox, tmp_path: Path) -> None:
    code, plan = healthy.plan_json(with_extra_values({"tunnelPort": "abc"}), tmp_path)
    assert code == 2
    refusal = next(f for f in plan["findings"] if f["id"] == "chart-rejects-install-values")
    assert refusal["message"].endswith("refuses the install values: tunnelPort: got string, "
                                       "want integer")
    assert refusal["subject"] == "tunnelPort"


def test_without_helm_the_plan_is_still_shown_with_a_warning_that_says_why(
        healthy: PlanSandbox, tmp_path: Path) -> None:
    result = healthy.plan(SPEC, tmp_path, "-o", "json", "--helm", str(tmp_path / "no-helm"))
    assert "Traceback" not in result.stderr
    plan = json.loads(result.stdout)
    assert result.returncode == 0 and plan["warnings_to_acknowledge"] == ["chart-not-rendered"]
    [finding] = plan["findings"]
    assert f"cannot run {tmp_path / 'no-helm'}" in finding["message"]
    assert plan["rendered_chart"] is None and plan["waves"]


def test_a_chart_that_cannot_be_fetched_is_a_warning_that_says_why(
        healthy: PlanSandbox, tmp_path: Path) -> None:
    missing = {**SPEC, "cilium": {"chart": {"path": str(tmp_path / "no-chart")}}}
    code, plan = healthy.plan_json(missing, tmp_path)
    assert code == 0
    [finding] = plan["findings"]
    assert finding["id"] == "chart-not-rendered"
    assert finding["message"].endswith(f"cannot fetch the Cilium chart to check the values: "
                                       f"chart path {tmp_path / 'no-chart'} does not exist on "
                                       "the worker's machine")


def test_an_invalid_spec_names_the_field_and_line(healthy: PlanSandbox, tmp_path: Path) -> None:
    result = healthy.plan("cluster:\n  name: ok\nnetwork:\n  tunnelPort: abc\n", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "network.tunnelPort" in result.stderr and ":4:" in result.stderr
    assert result.stdout == ""


def test_random_specs_never_crash_the_command(healthy: PlanSandbox, tmp_path: Path) -> None:
    rng = random.Random(7)
    junk = ["", "- a\n- b", "cluster: [", "\x00\xff", "cluster: {name: UPPER}",
            "cluster: {name: x}\nrollout: {maxUnavailable: 1e999}",
            "cluster: {name: x}\nnetwork: {podCIDRs: [10.300.0.0/16]}",
            "cluster: {name: x}\nsurprise: true",
            "cluster: {name: x}\nrollout: {canarySize: 99999999999999999999999}"]
    junk += ["".join(rng.choice("ab:{}[]-,\n '\"&*!|>") for _ in range(40)) for _ in range(5)]
    for text in junk:
        result = healthy.plan(text, tmp_path)
        assert result.returncode == 1, (text, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_an_unreachable_cluster_is_one_clear_error(tmp_path: Path, healthy: PlanSandbox) -> None:
    config = yaml.safe_load((healthy.state_dir / "kubeconfig").read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    result = subprocess.run([sys.executable, "-m", "client.cli", "plan", "-f", str(spec),
                             "--kubeconfig", str(kubeconfig), "--helm", str(healthy.helm)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot read cluster plan-test")
