"""The CNI runtime (sandbox/network/cni.py): libcni's semantics against a recording fake plugin,
then the real plugins (flannel delegating to bridge/host-local, ptp) in real namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.network import netns
from sandbox.network.cni import (
    CniConfig,
    CniError,
    CniRuntime,
    active_config,
    create_pod_netns,
    delete_pod_netns,
    load_config,
)
from tests.network.tools import ping_argv

REPO = Path(__file__).resolve().parents[2]
FLANNEL_MANIFEST = REPO / "sandbox" / "manifests" / "kube-flannel.yml"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 for network namespaces")


def _plugin_dir() -> Path | None:
    if os.environ.get("CILIUM_MIGRATE_CNI_BIN"):
        return Path(os.environ["CILIUM_MIGRATE_CNI_BIN"])
    try:  # the tool cache, when this checkout has it
        from sandbox.nettools import find_network_tools  # type: ignore[import-not-found]

        return Path(find_network_tools().cni_bin)
    except Exception:
        return None


@pytest.fixture(scope="module")
def plugins() -> Callable[..., Path]:
    """Returns the plugin dir once it holds the named plugins, else skips."""
    found = _plugin_dir()

    def need(*names: str) -> Path:
        if found is None:
            pytest.skip("no CNI plugins: set CILIUM_MIGRATE_CNI_BIN to a dir of built plugins")
        missing = [n for n in names if not (found / n).is_file()]
        if missing:
            pytest.skip(f"CNI plugins {missing} not in {found}")
        return found

    return need


@pytest.fixture
def namespaces() -> Iterator[Callable[[str], str]]:
    """Creates namespaces under a random prefix; all of them go at teardown, even on failure."""
    prefix = f"cnit{uuid.uuid4().hex[:6]}-"

    def make(role: str) -> str:
        name = prefix + role
        netns.create(name)
        return name

    try:
        yield make
    finally:
        for name in netns.named(prefix):
            netns.delete(name)


def flannel_conflist() -> str:
    """kube-flannel's cni-conf.json, as its install-cni container copies it."""
    for doc in yaml.safe_load_all(FLANNEL_MANIFEST.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and "cni-conf.json" in doc.get("data", {}):
            return str(doc["data"]["cni-conf.json"])
    raise AssertionError("no cni-conf.json in kube-flannel.yml")


def write_subnet_env(root: Path, subnet: str) -> None:
    """What flanneld writes with --subnet-file (FLANNEL_SUBNET is the bridge's address)."""
    env = root / "run" / "flannel" / "subnet.env"
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text(f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={subnet}\n"
                   "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


@dataclass
class Node:
    root: Path
    ns: str
    runtime: CniRuntime
    config: CniConfig

    def reserved(self, network: str = "cbr0") -> set[str]:
        """host-local's reservations on this node (one file per IP)."""
        directory = self.root / "var/lib/cni/networks" / network
        if not directory.is_dir():
            return set()
        return {p.name for p in directory.iterdir() if p.name[0].isdigit() and "." in p.name}


@pytest.fixture
def flannel_node(tmp_path: Path, namespaces: Callable[[str], str],
                 plugins: Callable[..., Path]) -> Callable[[str, str], Node]:
    plugin_dir = plugins("flannel", "bridge", "host-local", "portmap")

    def make(role: str, subnet: str) -> Node:
        root = tmp_path / role
        write_subnet_env(root, subnet)
        cni_dir = root / "etc/cni/net.d"
        cni_dir.mkdir(parents=True)
        (cni_dir / "10-flannel.conflist").write_text(flannel_conflist())
        config = active_config(cni_dir)
        assert config is not None
        ns = namespaces(role)
        return Node(root, ns, CniRuntime(plugin_dir, root, node_netns=ns), config)

    return make


def ping(source_ns: str, address: str) -> bool:
    return netns.run_in(source_ns, ping_argv(address)).returncode == 0


def links(ns: str) -> list[str]:
    return netns.links("", netns=ns)


def cache_files(root: Path) -> list[str]:
    directory = root / "var/lib/cni/results"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


# --- active_config ---------------------------------------------------------------------------


def test_active_config_is_the_lexically_first_that_loads(tmp_path: Path) -> None:
    single = {"cniVersion": "0.4.0", "name": "single", "type": "bridge"}
    (tmp_path / "00-broken.conflist").write_text("{not json")
    (tmp_path / "01-conflist-in-a.conf").write_text(json.dumps(
        {"name": "x", "plugins": [{"type": "bridge"}]}))  # no top-level type: not a .conf
    (tmp_path / "02-notes.txt").write_text("{}")
    (tmp_path / "03-dir.conf").mkdir()
    (tmp_path / "04-cilium.conflist.cilium_bak").write_text(flannel_conflist())
    (tmp_path / "20-flannel.conflist").write_text(flannel_conflist())
    (tmp_path / "10-single.conf").write_text(json.dumps(single))

    config = active_config(tmp_path)
    assert config == CniConfig("10-single.conf", {"name": "single", "cniVersion": "0.4.0",
                                                  "plugins": [single]})

    (tmp_path / "10-single.conf").rename(tmp_path / "10-single.conf.cilium_bak")
    config = active_config(tmp_path)
    assert config is not None and config.file == "20-flannel.conflist"
    assert config.name == "cbr0" and config.cni_version == "0.3.1"
    assert [p["type"] for p in config.network["plugins"]] == ["flannel", "portmap"]


def test_active_config_none_without_configs(tmp_path: Path) -> None:
    assert active_config(tmp_path / "missing") is None
    (tmp_path / "05-cilium.conflist.cilium_bak").write_text(flannel_conflist())
    assert active_config(tmp_path) is None


def test_json_config_and_cni_versions(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"name": "j", "type": "ptp"}))
    assert load_config(tmp_path / "a.json").network["plugins"] == [{"name": "j", "type": "ptp"}]
    (tmp_path / "b.conflist").write_text(json.dumps(
        {"name": "v", "cniVersion": "0.3.1", "cniVersions": ["0.4.0", "1.0.0", "9.0.0"],
         "plugins": [{"type": "ptp"}]}))
    assert load_config(tmp_path / "b.conflist").cni_version == "1.0.0"  # 9.0.0 is unknown


# --- libcni semantics, with a fake plugin that records each call --------------------------------

FAKE_PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
command = os.environ["CNI_COMMAND"]
with open(conf["log"], "a") as log:
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
    log.write(json.dumps({{"command": command, "env": env, "conf": conf}}) + "\\n")
failure = conf.get("fail", {{}}).get(command)
if failure == "json":
    print(json.dumps({{"code": 7, "msg": "it broke", "details": "badly"}}))
    sys.exit(1)
if failure == "stderr":
    sys.stderr.write("plain crash\\n")
    sys.exit(2)
if command == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"],
        "ips": [{{"address": "10.9.0.5/24", "gateway": "10.9.0.1"}}]}}
    result["seen"] = result.get("seen", []) + [conf["tag"]]
    print(json.dumps(result))
"""


@dataclass
class Fake:
    runtime: CniRuntime
    log: Path
    root: Path

    def config(self, *plugins: dict[str, Any], version: str = "1.0.0") -> CniConfig:
        listed = [{"type": "fake", "log": str(self.log), **p} for p in plugins]
        return CniConfig("10-fake.conflist", {"cniVersion": version, "name": "fakenet",
                                              "plugins": listed})

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        self.log.unlink()
        return calls


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    plugin_dir = tmp_path / "bin"
    plugin_dir.mkdir()
    (plugin_dir / "fake").write_text(FAKE_PLUGIN.format(python=sys.executable))
    (plugin_dir / "fake").chmod(0o755)
    root = tmp_path / "node"
    return Fake(CniRuntime(plugin_dir, root), tmp_path / "calls.jsonl", root)


def test_add_chains_prev_result_and_passes_the_cni_parameters(fake: Fake) -> None:
    config = fake.config({"tag": "a"}, {"tag": "b", "name": "ignored", "cniVersion": "0.1.0"})
    result = fake.runtime.add(config, "c1", Path("/run/netns/pod"), "eth1",
                              cni_args={"K8S_POD_NAME": "p", "K8S_POD_NAMESPACE": "ns"})
    assert (result.ip, result.gateway, result.raw["seen"]) == ("10.9.0.5", "10.9.0.1", ["a", "b"])

    first, second = fake.calls()
    assert first["env"] == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                            "CNI_NETNS": "/run/netns/pod", "CNI_IFNAME": "eth1",
                            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
                            "CNI_PATH": str(fake.runtime.plugin_dir)}
    assert "prevResult" not in first["conf"]
    assert second["conf"]["prevResult"]["seen"] == ["a"]
    assert (second["conf"]["name"], second["conf"]["cniVersion"]) == ("fakenet", "1.0.0")
    assert "runtimeConfig" not in first["conf"] and "runtimeConfig" not in second["conf"]
    assert cache_files(fake.root) == ["fakenet-c1-eth1"]


def test_runtime_config_only_for_declared_capabilities(fake: Fake) -> None:
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    config = fake.config({"tag": "a"}, {"tag": "b", "capabilities": {"portMappings": True}},
                         {"tag": "c", "capabilities": {"portMappings": False}})
    fake.runtime.add(config, "c1", Path("/run/netns/pod"),
                     capability_args={"portMappings": mappings, "bandwidth": {"rate": 1}})
    a, b, c = fake.calls()
    assert "runtimeConfig" not in a["conf"] and "runtimeConfig" not in c["conf"]
    assert b["conf"]["runtimeConfig"] == {"portMappings": mappings}
    fake.runtime.delete("c1", None)
    assert [call["conf"].get("runtimeConfig") for call in fake.calls()] == [
        None, {"portMappings": mappings}, None]


def test_del_uses_the_cached_config_in_reverse(fake: Fake) -> None:
    config = fake.config({"tag": "a"}, {"tag": "b"})
    fake.runtime.add(config, "c1", Path("/run/netns/gone"), cni_args={"X": "1"})
    fake.calls()
    fake.runtime.delete("c1", Path("/run/netns/gone"))
    calls = fake.calls()
    assert [(c["command"], c["conf"]["tag"]) for c in calls] == [("DEL", "b"), ("DEL", "a")]
    assert all(c["env"]["CNI_ARGS"] == "IgnoreUnknown=1;X=1" for c in calls)
    assert all(c["env"]["CNI_NETNS"] == "" for c in calls)  # that netns does not exist
    assert all(c["conf"]["prevResult"]["seen"] == ["a", "b"] for c in calls)  # 1.0.0: cached
    assert cache_files(fake.root) == []

    fake.runtime.delete("c1", None)  # nothing cached: nothing to do
    assert fake.calls() == []


def test_del_of_a_0_3_1_list_gets_no_prev_result(fake: Fake) -> None:
    fake.runtime.add(fake.config({"tag": "a"}, version="0.3.1"), "c1", Path("/run/netns/p"))
    fake.calls()
    fake.runtime.delete("c1", None)
    (call,) = fake.calls()
    assert "prevResult" not in call["conf"]


def test_plugin_errors(fake: Fake) -> None:
    config = fake.config({"tag": "a"}, {"tag": "b", "fail": {"ADD": "json"}})
    with pytest.raises(CniError) as raised:
        fake.runtime.add(config, "c1", Path("/run/netns/p"))
    assert str(raised.value) == "plugin type='fake' failed (add): it broke; badly"
    assert (raised.value.plugin, raised.value.code, raised.value.msg) == ("fake", 7, "it broke")
    # The failed ADD is torn down (every plugin, reverse order) and nothing is cached.
    assert [(c["command"], c["conf"]["tag"]) for c in fake.calls()] == [
        ("ADD", "a"), ("ADD", "b"), ("DEL", "b"), ("DEL", "a")]
    assert cache_files(fake.root) == []

    config = fake.config({"tag": "a", "fail": {"DEL": "stderr"}})
    fake.runtime.add(config, "c2", Path("/run/netns/p"))
    with pytest.raises(CniError, match="plain crash"):
        fake.runtime.delete("c2", None)
    assert cache_files(fake.root) == ["fakenet-c2-eth0"]  # kept, so DEL can be tried again

    with pytest.raises(CniError, match="failed to find plugin 'nothere'"):
        fake.runtime.add(CniConfig("x.conf", {"name": "n", "cniVersion": "1.0.0",
                                              "plugins": [{"type": "nothere"}]}),
                         "c3", Path("/run/netns/p"))
    with pytest.raises(CniError, match="invalid container ID"):
        fake.runtime.add(config, "bad/id", Path("/run/netns/p"))


def test_check_needs_0_4_0(fake: Fake) -> None:
    fake.runtime.add(fake.config({"tag": "a"}), "c1", Path("/run/netns/p"))
    fake.calls()
    fake.runtime.check("c1", Path("/run/netns/p"))
    (call,) = fake.calls()
    assert call["command"] == "CHECK" and call["conf"]["prevResult"]["seen"] == ["a"]

    fake.runtime.add(fake.config({"tag": "a"}, version="0.3.1"), "c2", Path("/run/netns/p"))
    with pytest.raises(CniError, match="does not support the CHECK command"):
        fake.runtime.check("c2", Path("/run/netns/p"))


def test_node_state_is_injected_only_at_execution(fake: Fake) -> None:
    (fake.runtime.plugin_dir / "flannel").symlink_to(fake.runtime.plugin_dir / "fake")
    flannel_conf = {"type": "flannel", "tag": "f", "log": str(fake.log),
                    "delegate": {"hairpinMode": True}}
    other_conf = {"type": "fake", "tag": "p", "log": str(fake.log),
                  "ipam": {"type": "host-local"}}
    config = CniConfig("10-flannel.conflist", {"cniVersion": "0.3.1", "name": "cbr0",
                                               "plugins": [flannel_conf, other_conf]})
    snapshot = json.dumps(config.network)
    fake.runtime.add(config, "c1", Path("/run/netns/p"))
    flannel, other = (call["conf"] for call in fake.calls())
    root = fake.root
    assert flannel["subnetFile"] == str(root / "run/flannel/subnet.env")
    assert flannel["dataDir"] == str(root / "var/lib/cni/flannel")
    assert flannel["ipam"] == {"dataDir": str(root / "var/lib/cni/networks")}
    assert flannel["delegate"] == {"hairpinMode": True}
    assert other["ipam"] == {"type": "host-local", "dataDir": str(root / "var/lib/cni/networks")}
    assert json.dumps(config.network) == snapshot  # the config itself is untouched
    cached = json.loads((root / "var/lib/cni/results/cbr0-c1-eth0").read_text())
    assert cached["kind"] == "cniCacheV1" and cached["networkName"] == "cbr0"


# --- real plugins in real namespaces ---------------------------------------------------------


@needs_root
def test_flannel_add_gives_the_pod_an_ip_on_the_node_bridge(
        flannel_node: Callable[[str, str], Node], namespaces: Callable[[str], str]) -> None:
    node = flannel_node("node", "10.244.7.1/24")
    on_disk = (node.root / "etc/cni/net.d/10-flannel.conflist").read_text()
    pod = namespaces("pod")

    result = node.runtime.add(node.config, "pod1", netns.path(pod),
                              cni_args={"K8S_POD_NAME": "pod1", "K8S_POD_NAMESPACE": "default"})

    assert ipaddress.ip_address(result.ip) in ipaddress.ip_network("10.244.7.0/24")
    assert result.gateway == "10.244.7.1"
    assert "cni0" in links(node.ns) and "cni0" not in netns.links("cni0")
    assert "10.244.7.1/24" in netns.ip("-o", "addr", "show", "cni0", netns=node.ns)
    assert "eth0" in links(pod)
    assert ping(pod, "10.244.7.1")
    assert node.reserved() == {result.ip}
    assert (node.root / "var/lib/cni/flannel/pod1").is_file()  # flannel's scratch delegate conf
    assert (node.root / "etc/cni/net.d/10-flannel.conflist").read_text() == on_disk


@needs_root
def test_two_pods_on_one_node_reach_each_other(
        flannel_node: Callable[[str, str], Node], namespaces: Callable[[str], str]) -> None:
    node = flannel_node("node", "10.244.8.1/24")
    a, b = namespaces("a"), namespaces("b")
    ip_a = node.runtime.add(node.config, "pod-a", netns.path(a)).ip
    ip_b = node.runtime.add(node.config, "pod-b", netns.path(b)).ip
    assert ip_a != ip_b
    assert ping(a, ip_b) and ping(b, ip_a)


@needs_root
def test_del_frees_the_ip_and_is_idempotent(
        flannel_node: Callable[[str, str], Node], namespaces: Callable[[str], str]) -> None:
    node = flannel_node("node", "10.244.9.1/30")  # one pod address: 10.244.9.2
    first, second = namespaces("first"), namespaces("second")
    assert node.runtime.add(node.config, "pod1", netns.path(first)).ip == "10.244.9.2"

    with pytest.raises(CniError, match="no IP addresses available"):
        node.runtime.add(node.config, "pod2", netns.path(second))
    assert "eth0" not in links(second)  # the failed ADD was torn down
    assert cache_files(node.root) == ["cbr0-pod1-eth0"]

    node.runtime.delete("pod1", netns.path(first))
    assert node.reserved() == set() and cache_files(node.root) == []
    assert "eth0" not in links(first)
    node.runtime.delete("pod1", netns.path(first))
    node.runtime.delete("pod1", None)

    assert node.runtime.add(node.config, "pod2", netns.path(second)).ip == "10.244.9.2"


@needs_root
def test_del_after_the_pod_namespace_is_gone(flannel_node: Callable[[str, str], Node]) -> None:
    node = flannel_node("node", "10.244.10.1/24")
    name = f"{node.ns}-pod"
    path = create_pod_netns(name)
    try:
        node.runtime.add(node.config, "pod1", path)
        veths = [link for link in links(node.ns) if link.startswith("veth")]
        assert len(veths) == 1
    finally:
        delete_pod_netns(name)
    assert not path.exists()
    # Only the IP is left to release: the kernel removes the host veth with the namespace
    # (asynchronously, so not asserted here).
    node.runtime.delete("pod1", path)
    assert node.reserved() == set() and cache_files(node.root) == []


@needs_root
def test_two_nodes_allocate_independently(
        flannel_node: Callable[[str, str], Node], namespaces: Callable[[str], str]) -> None:
    one, two = flannel_node("n1", "10.244.1.1/24"), flannel_node("n2", "10.244.2.1/24")
    pod1, pod2 = namespaces("p1"), namespaces("p2")
    ip1 = one.runtime.add(one.config, "pod1", netns.path(pod1)).ip
    ip2 = two.runtime.add(two.config, "pod2", netns.path(pod2)).ip
    assert (ip1, ip2) == ("10.244.1.2", "10.244.2.2")  # each node's first address
    assert one.reserved() == {ip1} and two.reserved() == {ip2}
    assert cache_files(one.root) == ["cbr0-pod1-eth0"]
    assert cache_files(two.root) == ["cbr0-pod2-eth0"]
    assert "10.244.1.1/24" in netns.ip("-o", "addr", "show", "cni0", netns=one.ns)
    assert "10.244.2.1/24" in netns.ip("-o", "addr", "show", "cni0", netns=two.ns)
    two.runtime.delete("pod1", None)  # another node's pod: not known there
    assert one.reserved() == {ip1}


@needs_root
def test_missing_subnet_env_reports_the_plugin_error(
        flannel_node: Callable[[str, str], Node], namespaces: Callable[[str], str]) -> None:
    node = flannel_node("node", "10.244.11.1/24")
    subnet_env = node.root / "run/flannel/subnet.env"
    subnet_env.unlink()  # flanneld has not started yet
    pod = namespaces("pod")
    with pytest.raises(CniError) as raised:
        node.runtime.add(node.config, "pod1", netns.path(pod))
    assert raised.value.plugin == "flannel"
    assert f"open {subnet_env}: no such file or directory" in str(raised.value)
    assert "type='flannel' failed (add)" in str(raised.value)
    assert cache_files(node.root) == [] and "eth0" not in links(pod)


@needs_root
def test_ptp_with_host_local(tmp_path: Path, namespaces: Callable[[str], str],
                             plugins: Callable[..., Path]) -> None:
    """The stand-in for pods on Cilium's config: ptp over host-local, 10.245.1.0/24."""
    plugin_dir = plugins("ptp", "host-local")
    root = tmp_path / "node"
    cni_dir = root / "etc/cni/net.d"
    cni_dir.mkdir(parents=True)
    (cni_dir / "05-cilium.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "cilium-standin", "plugins": [{
            "type": "ptp", "mtu": 1450,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.1.0/24"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}))
    config = active_config(cni_dir)
    assert config is not None and config.file == "05-cilium.conflist"
    node = namespaces("node")
    runtime = CniRuntime(plugin_dir, root, node_netns=node)
    a, b = namespaces("a"), namespaces("b")

    result_a = runtime.add(config, "pod-a", netns.path(a))
    result_b = runtime.add(config, "pod-b", netns.path(b))
    for result in (result_a, result_b):
        assert ipaddress.ip_address(result.ip) in ipaddress.ip_network("10.245.1.0/24")
    assert result_a.gateway is not None and ping(a, result_a.gateway)
    assert ping(a, result_b.ip)  # routed through the node's namespace
    runtime.check("pod-a", netns.path(a))
    assert (root / "var/lib/cni/networks/cilium-standin" / result_a.ip).is_file()

    runtime.delete("pod-a", netns.path(a))
    runtime.delete("pod-a", netns.path(a))
    assert not (root / "var/lib/cni/networks/cilium-standin" / result_a.ip).exists()
    assert "eth0" not in links(a)
