"""Discovery's failures are typed: a cluster discovery cannot read fails the discover activity
at once, non-retryable, instead of being retried for minutes. The API server address for the
nodes comes from what the cluster publishes, and bad data there is a note, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.context import ActivityContext
from activities.discovery import DiscoveryError, discover_cluster, kubeconfig_server
from activities.kubeapi import Kube, Obj
from activities.registry import MigrationActivities
from plan.contract import StepError
from plan.facts import ApiEndpoint
from plan.policies import ClusterRef
from tests.fake_kube import FakeKube, api_error, node, pod


def cluster(net_conf: str | None) -> FakeKube:
    """A node and a flannel DaemonSet whose ConfigMap holds ``net_conf`` (None: no key)."""
    kube = FakeKube()
    kube.add("/api/v1/nodes", node("node-1"))
    kube.add("/apis/apps/v1/namespaces/kube-flannel/daemonsets", {
        "metadata": {"name": "kube-flannel-ds"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "kube-flannel", "image": "flannel/flannel:v0.26.0",
                            "command": ["/opt/bin/flanneld"]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "kube-flannel-cfg"}}]}}}})
    kube.add("/api/v1/namespaces/kube-flannel/configmaps", {
        "metadata": {"name": "kube-flannel-cfg"},
        "data": {} if net_conf is None else {"net-conf.json": net_conf}})
    return kube


class FakeContext(ActivityContext):
    """Hands every activity the one fake cluster."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__()
        self.fake = kube

    def kube(self, cluster: ClusterRef) -> Kube:
        return self.fake


def test_a_readable_flannel_config_is_discovered() -> None:
    facts = discover_cluster(cluster('{"Network": "10.244.0.0/16", "Backend": '
                                     '{"Type": "vxlan", "VNI": 4096}}'))
    assert facts.flannel is not None
    assert str(facts.flannel.network) == "10.244.0.0/16" and facts.flannel.vni == 4096
    # The client reaches https://10.0.0.1:6443, but nothing says nodes do: no address.
    assert facts.api_endpoint is None and facts.api_endpoint_notes == []
    assert [(n.name, n.boot_id, n.ready, n.schedulable) for n in facts.nodes] == [
        ("node-1", "boot-1", True, True)]


def test_the_server_version_and_served_api_versions_are_recorded_for_rendering() -> None:
    kube = cluster('{"Network": "10.244.0.0/16"}')
    kube.discovery["/apis"]["groups"].append({"name": "cilium.io", "versions": [
        {"groupVersion": "cilium.io/v2", "version": "v2"},
        {"groupVersion": "cilium.io/v2alpha1", "version": "v2alpha1"}]})
    facts = discover_cluster(kube)
    assert facts.server_version == "v1.35.4"
    assert facts.api_versions == ["apps/v1", "cilium.io/v2", "cilium.io/v2alpha1",
                                  "networking.k8s.io/v1", "policy/v1", "v1"]


def test_pods_a_drain_may_refuse_are_recorded_from_one_list_of_pods() -> None:
    kube = cluster('{"Network": "10.244.0.0/16"}')
    for each in [
        pod("web", "node-1"),  # a Deployment's: nothing to say
        pod("cache", "node-1", empty_dirs=("scratch",)),
        pod("debug", "node-2", owner=None, namespace="default"),
        pod("both", "node-2", owner=None, empty_dirs=("tmp",)),
        # What a drain leaves alone or has no say over: never recorded.
        pod("agent", "node-1", owner="DaemonSet", empty_dirs=("run",)),
        pod("static", "node-1", owner=None, annotations={"kubernetes.io/config.mirror": "x"}),
        pod("done", "node-1", owner=None, phase="Succeeded"),
        pod("going", "node-1", owner=None, terminating=True),
        pod("pending", "", owner=None),
    ]:
        kube.add(f"/api/v1/namespaces/{each['metadata']['namespace']}/pods", each)
    facts = discover_cluster(kube)
    assert [(str(p), p.node, p.empty_dirs, p.unmanaged) for p in facts.pods_drain_may_refuse
            ] == [("apps/cache", "node-1", ["scratch"], False),
                  ("default/debug", "node-2", [], True),
                  ("apps/both", "node-2", ["tmp"], True)]
    assert [path for path, _ in kube.asked("GET", "/pods")] == ["/api/v1/pods"]


@pytest.mark.parametrize(("net_conf", "words"), [
    ("not json", "kube-flannel/kube-flannel-cfg: net-conf.json is not usable"),
    ('{"Backend": {"Type": "vxlan"}}', "expected JSON with Network and Backend"),
    (None, "no ConfigMap with net-conf.json among ['kube-flannel-cfg']"),
])
def test_an_unreadable_flannel_config_fails_typed_and_non_retryable(
        net_conf: str | None, words: str) -> None:
    with pytest.raises(DiscoveryError) as raised:
        discover_cluster(cluster(net_conf))
    error = raised.value
    assert isinstance(error, ApplicationError)
    assert error.type == StepError.DISCOVERY_FAILED and error.non_retryable
    assert words in str(error)


def test_the_discover_activity_fails_with_it_and_the_workflow_sees_its_type() -> None:
    steps = MigrationActivities(FakeContext(cluster("not json")))
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(steps.discover_cluster, ClusterRef(name="c"))
    # What Temporal sends the workflow: the failure as the worker's converter encodes it.
    failure = Failure()
    converter = pydantic_data_converter  # the worker's
    converter.failure_converter.to_failure(raised.value, converter.payload_converter, failure)
    assert failure.application_failure_info.type == StepError.DISCOVERY_FAILED
    assert failure.application_failure_info.non_retryable
    seen = converter.failure_converter.from_failure(failure, converter.payload_converter)
    assert isinstance(seen, ApplicationError)
    assert (seen.type, seen.non_retryable) == (StepError.DISCOVERY_FAILED, True)


def kubeconfig(server: str, **extra: Any) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Config",
                           "clusters": [{"name": "default", "cluster": {"server": server}}],
                           **extra})


def publish(kube: FakeKube, kube_proxy: str | None = None, cluster_info: str | None = None,
            ) -> FakeKube:
    """kubeadm's ConfigMaps, each only when given (its key's text)."""
    if kube_proxy is not None:
        kube.add("/api/v1/namespaces/kube-system/configmaps", {
            "metadata": {"name": "kube-proxy"},
            "data": {"config.conf": "kind: KubeProxyConfiguration\n",
                     "kubeconfig.conf": kube_proxy}})
    if cluster_info is not None:
        kube.add("/api/v1/namespaces/kube-public/configmaps", {
            "metadata": {"name": "cluster-info"}, "data": {"kubeconfig": cluster_info}})
    return kube


FLANNEL = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


def test_the_kube_proxy_configmap_names_the_api_server_for_the_nodes() -> None:
    kube = publish(cluster(FLANNEL), kubeconfig("https://192.0.2.10:6443"),
                   kubeconfig("https://198.51.100.7:443"))
    facts = discover_cluster(kube)
    assert facts.api_endpoint == ApiEndpoint(host="192.0.2.10", port=6443, source="kube-proxy")
    assert facts.api_endpoint_notes == []


def test_cluster_info_is_used_when_kube_proxys_kubeconfig_is_unusable() -> None:
    kube = publish(cluster(FLANNEL), "clusters: [unclosed",
                   kubeconfig("https://api.example.internal"))
    facts = discover_cluster(kube)
    assert facts.api_endpoint == ApiEndpoint(host="api.example.internal", port=443,
                                             source="cluster-info")
    [note] = facts.api_endpoint_notes
    assert note.startswith("kube-system/kube-proxy kubeconfig.conf: not YAML")


def test_nothing_usable_published_leaves_no_address_and_says_why() -> None:
    kube = publish(cluster(FLANNEL), kubeconfig("https://192.0.2.10:99999"), "")
    facts = discover_cluster(kube)
    assert facts.api_endpoint is None
    assert facts.api_endpoint_notes == [
        "kube-system/kube-proxy kubeconfig.conf: server 'https://192.0.2.10:99999' is not a "
        "URL with a valid port",
        "kube-public/cluster-info kubeconfig: not a kubeconfig (expected a mapping)",
    ]


class Forbidden(FakeKube):
    """A cluster whose RBAC hides one ConfigMap from the credentials in use."""

    def __init__(self, hidden: str) -> None:
        super().__init__()
        self.hidden = hidden

    def get_or_none(self, path: str) -> Obj | None:
        if path == self.hidden:
            raise api_error(403, "forbidden", "Forbidden")
        return super().get_or_none(path)


def test_a_configmap_the_credentials_cannot_read_is_a_note_not_a_failure() -> None:
    kube = Forbidden("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
    kube.objects = cluster(FLANNEL).objects
    publish(kube, cluster_info=kubeconfig("https://192.0.2.10:6443"))
    facts = discover_cluster(kube)
    assert facts.api_endpoint == ApiEndpoint(host="192.0.2.10", port=6443, source="cluster-info")
    assert facts.api_endpoint_notes == [
        "kube-system/kube-proxy: not readable with these credentials (403)"]


@pytest.mark.parametrize(("text", "expected"), [
    (kubeconfig("https://192.0.2.10:6443"), ("192.0.2.10", 6443)),
    (kubeconfig("https://[2001:db8::10]:6443"), ("2001:db8::10", 6443)),
    (kubeconfig("https://cp.internal"), ("cp.internal", 443)),
    (kubeconfig(" http://cp.internal:8080 "), ("cp.internal", 8080)),
    # The current context picks among several clusters.
    (yaml.safe_dump({
        "clusters": [{"name": "a", "cluster": {"server": "https://10.0.0.1:6443"}},
                     {"name": "b", "cluster": {"server": "https://10.0.0.2:6443"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "b"}}],
        "current-context": "ctx"}), ("10.0.0.2", 6443)),
])
def test_a_kubeconfigs_server_is_read_from_its_current_or_only_cluster(
        text: str, expected: tuple[str, int]) -> None:
    assert kubeconfig_server(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("", "not a kubeconfig (expected a mapping)"),
    ("- a\n- b\n", "not a kubeconfig"),
    ("a: [", "not YAML"),
    ("clusters: 7", "no clusters"),
    ("clusters: [{name: [x], cluster: {server: 'https://a'}}]", "no clusters"),
    ("clusters: [{name: a, cluster: {server: 'https://a'}}, {name: b, cluster: {}}]\n"
     "current-context: [odd]", "2 clusters and no current context"),
    ("clusters: [{name: a, cluster: nope}]", "its cluster entry is not a mapping"),
    ("clusters: [{name: a, cluster: {server: 7}}]", "its cluster has no server"),
    (kubeconfig("192.0.2.10:6443"), "is not an https:// URL with a host"),
    (kubeconfig("https://:6443"), "is not an https:// URL with a host"),
    (kubeconfig("https://[::1"), "is not a URL with a valid port"),
    (kubeconfig("https://cp:http"), "is not a URL with a valid port"),
])
def test_a_bad_kubeconfig_is_a_reason_not_a_traceback(text: str, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        kubeconfig_server(text)
    assert words in str(raised.value)
