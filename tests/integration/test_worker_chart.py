"""The worker's Helm chart (deploy/cilium-migrate-worker): its values are checked when it is
rendered, its manifest passes a real API server's validation, its Deployment passes flags the
worker accepts, its Helm binding holds every right Cilium's chart grants (else the API server
refuses the install as an escalation), and its ServiceAccount can neither read Secrets outside
its namespace nor delete nodes. tests/integration/test_worker_rbac_migration.py runs a whole
migration with that account's token."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from client.cli import build_parser
from plan.facts import ClusterFacts, FlannelFacts, NodeFacts
from plan.helm_values import final_values, initial_values
from plan.spec import MigrationSpec
from sandbox.toolchain import Toolchain
from tests.conftest import CHART as CILIUM_CHART
from tests.conftest import Sandbox
from tests.integration.worker_chart import (
    NAMESPACE,
    RELEASE,
    Right,
    can_i,
    covered,
    install,
    objects,
    render,
    rights,
    run,
    service_account_kubeconfig,
)

EVERY_OPTION = {
    "temporal": {"namespace": "migrations", "taskQueue": "cilium-migrate.sandbox",
                 "tls": {"enabled": True, "serverName": "temporal.example.com",
                         "secretName": "temporal-mtls"},
                 "apiKey": {"secretName": "temporal-api-key"}},
    "metrics": {"port": 9100},
    "otelEndpoint": "http://otel-collector.monitoring:4317",
    "rbac": {"forceDrain": True},
    "helmBinding": {"extraRules": [{"apiGroups": ["gateway.networking.k8s.io"],
                                    "resources": ["gatewayclasses"], "verbs": ["get"]}]},
}


def kinds(manifest: str) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects(manifest)}


@pytest.mark.parametrize(("values", "complaint"), [
    ({"clusterName": ""}, "/clusterName"),
    ({"clusterName": "Prod_EU"}, "/clusterName"),
    ({"temporal": {"address": "temporal-frontend"}}, "/temporal/address"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"port": "9464"}}, "/metrics/port"),
    ({"worker": {"logFormat": "text"}}, "/worker/logFormat"),
    ({"securityContext": {"readOnlyRootFilesystem": "yes"}},
     "/securityContext/readOnlyRootFilesystem"),
    ({"podSecurityContext": {"seccompProfile": {"type": "runtime/default"}}},
     "/podSecurityContext/seccompProfile/type"),
    ({"helmBindng": {"enabled": False}}, "helmBindng"),
    ({"temporal": {"tls": {"secret": "x"}}}, "secret"),
])
def test_bad_values_fail_when_rendered(toolchain: Toolchain, tmp_path: Path,
                                       values: dict[str, Any], complaint: str) -> None:
    result = render(toolchain, tmp_path, values, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


def test_the_deployment_passes_flags_the_worker_accepts(toolchain: Toolchain,
                                                        tmp_path: Path) -> None:
    manifest = render(toolchain, tmp_path, EVERY_OPTION).stdout
    [deployment] = [o for o in objects(manifest) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["cilium-migrate"]
    args = build_parser().parse_args(container["args"])
    assert (args.address, args.namespace, args.task_queue) == (
        "temporal-frontend.temporal:7233", "migrations", "cilium-migrate.sandbox")
    assert args.metrics_address == "0.0.0.0:9100"
    assert args.tls and args.tls_server_name == "temporal.example.com"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret_dir = mounts["temporal-tls"]
    assert (args.tls_cert_path, args.tls_key_path, args.tls_ca_path) == (
        f"{secret_dir}/tls.crt", f"{secret_dir}/tls.key", f"{secret_dir}/ca.crt")
    [tls_volume] = [v for v in pod["volumes"] if v["name"] == "temporal-tls"]
    assert tls_volume["secret"]["secretName"] == "temporal-mtls"
    env = {e["name"]: e for e in container["env"]}
    assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "temporal-api-key", "key": "api-key"}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.monitoring:4317"
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    hardened = container["securityContext"]
    assert hardened["readOnlyRootFilesystem"] and not hardened["allowPrivilegeEscalation"]
    assert hardened["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == RELEASE


def test_the_task_queue_is_the_clusters_own_by_default(toolchain: Toolchain,
                                                       tmp_path: Path) -> None:
    manifest = render(toolchain, tmp_path, {"clusterName": "prod-eu"}).stdout
    [deployment] = [o for o in objects(manifest) if o["kind"] == "Deployment"]
    args = build_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]
                                     ["args"])
    assert args.task_queue == "cilium-migrate.prod-eu"
    assert not args.tls and args.tls_cert_path is None


def test_the_helm_binding_can_be_left_out(toolchain: Toolchain, tmp_path: Path) -> None:
    with_binding = kinds(render(toolchain, tmp_path, {}).stdout)
    without = kinds(render(toolchain, tmp_path, {"helmBinding": {"enabled": False}}).stdout)
    assert with_binding - without == {
        f"ClusterRole/{RELEASE}-helm", f"ClusterRoleBinding/{RELEASE}-helm",
        f"Role/{RELEASE}-helm", f"RoleBinding/{RELEASE}-helm"}


def cilium_roles(toolchain: Toolchain, directory: Path, values: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    path = directory / "cilium-values.json"
    path.write_text(json.dumps(values))
    manifest = run(toolchain, "helm", "template", "cilium", str(CILIUM_CHART), "--namespace",
                   "kube-system", "--values", str(path)).stdout
    return [o for o in objects(manifest) if o["kind"] in ("ClusterRole", "Role")]


def test_the_helm_binding_holds_every_right_the_cilium_chart_grants(
        toolchain: Toolchain, tmp_path: Path) -> None:
    """Offline, what the API server checks when Helm creates Cilium's roles: the creator must
    hold every right they grant (cluster-wide for a ClusterRole, in the namespace for a Role)."""
    spec = MigrationSpec.model_validate({"cluster": {"name": "sandbox"}})
    facts = ClusterFacts(
        nodes=[NodeFacts(name="worker-1", pod_cidrs=["10.244.1.0/24"])],
        flannel=FlannelFacts(namespace="kube-flannel", daemonset="kube-flannel-ds",
                             network="10.244.0.0/16"),
        service_cidrs=["10.96.0.0/12"])
    worker = objects(render(toolchain, tmp_path, {}).stdout)
    cluster_wide = rights(r for o in worker if o["kind"] == "ClusterRole" for r in o["rules"])
    by_namespace: dict[str, set[Right]] = defaultdict(set)
    for role in (o for o in worker if o["kind"] == "Role"):
        by_namespace[role["metadata"]["namespace"]] |= rights(role["rules"])
    missing = set()
    for values in (initial_values(spec, facts), final_values(spec, facts)):
        for role in cilium_roles(toolchain, tmp_path, values):
            where = role["metadata"].get("namespace")
            held = cluster_wide | (by_namespace[where] if role["kind"] == "Role" else set())
            missing |= {(role["kind"], role["metadata"]["name"], wanted)
                        for wanted in rights(role["rules"]) if not covered(wanted, held)}
    assert not missing, "\n".join(map(str, sorted(missing, key=str)))


@pytest.mark.sandbox
def test_the_manifest_passes_server_side_validation(sandbox: Sandbox, toolchain: Toolchain,
                                                    namespace: str, tmp_path: Path) -> None:
    manifest = render(toolchain, tmp_path, EVERY_OPTION, namespace=namespace).stdout
    result = sandbox.kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest,
                             check=False)
    assert result.returncode == 0, result.stderr
    applied = {line.split()[0] for line in result.stdout.splitlines()}
    assert {f"serviceaccount/{RELEASE}", f"deployment.apps/{RELEASE}",
            f"clusterrole.rbac.authorization.k8s.io/{RELEASE}",
            f"clusterrole.rbac.authorization.k8s.io/{RELEASE}-helm",
            f"role.rbac.authorization.k8s.io/{RELEASE}-cilium",
            f"role.rbac.authorization.k8s.io/{RELEASE}-flannel"} <= applied, result.stdout


@pytest.mark.sandbox
def test_the_service_account_cannot_read_secrets_elsewhere_or_delete_nodes(
        sandbox: Sandbox, toolchain: Toolchain, tmp_path: Path) -> None:
    admin = sandbox.kubeconfig
    try:
        install(toolchain, admin, tmp_path, {"helmBinding": {"enabled": False}})
        worker = service_account_kubeconfig(toolchain, admin, tmp_path / "worker.kubeconfig")
        # The token works, and holds what the steps need ...
        assert can_i(toolchain, worker, "patch", "nodes")
        assert can_i(toolchain, worker, "create", "pods", "default", subresource="eviction")
        assert can_i(toolchain, worker, "delete", "pods", "kube-system")
        # ... and not what they do not.
        for where in ("kube-system", "default", "kube-flannel", "kube-public", NAMESPACE):
            for verb in ("get", "list", "watch"):
                assert not can_i(toolchain, worker, verb, "secrets", where), (verb, where)
        assert not can_i(toolchain, worker, "list", "secrets", None)
        assert not can_i(toolchain, worker, "delete", "nodes")
        assert not can_i(toolchain, worker, "delete", "pods", "default")  # no forceDrain
        assert not can_i(toolchain, worker, "delete", "namespaces/kube-system")
        assert not can_i(toolchain, worker, "create", "clusterrolebindings")

        # With the Helm binding: Cilium's rights, which never include deleting a node or
        # giving itself more (Kubernetes' escalate, bind, impersonate) ...
        install(toolchain, admin, tmp_path, {})
        assert can_i(toolchain, worker, "create", "clusterroles")
        for verb, resource in (("delete", "nodes"), ("escalate", "clusterroles"),
                               ("bind", "clusterroles"), ("impersonate", "users"),
                               ("update", "clusterroles/cluster-admin"),
                               ("delete", "namespaces/kube-system")):
            assert not can_i(toolchain, worker, verb, resource, "default"), (verb, resource)
        assert not can_i(toolchain, worker, "create", "pods", "default", subresource="exec")
        # ... but Secrets everywhere, as cilium-operator may: why the binding is removable.
        assert can_i(toolchain, worker, "list", "secrets", "default")

        install(toolchain, admin, tmp_path, {"helmBinding": {"enabled": False}})
        assert not can_i(toolchain, worker, "list", "secrets", "default")
    finally:
        run(toolchain, "helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
            kubeconfig=admin, check=False)
