"""The simulator's building blocks, without a cluster."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from activities.kubeapi import selector_matches
from sandbox import docker_shim
from sandbox.bootstrap import cluster_info_config_map, kube_proxy_config_map
from sandbox.simulator.apiserver import Endpoint, dialled_endpoint, why_unreachable
from sandbox.simulator.containers import (
    docker_time,
    read_container,
    record_start,
    request_restart,
    take_restart_requests,
)
from sandbox.simulator.faults import Fault, FaultBook, FaultFileError, read_faults, write_faults
from sandbox.simulator.hostfs import HostFs, run_host_command
from sandbox.simulator.ipam import CidrSet, ExhaustedError, HostLocal
from sandbox.simulator.operator import operator_version
from sandbox.simulator.personalities import agent_crds, go_duration
from sandbox.simulator.selectors import InvalidSelector, selects
from sandbox.topology import (
    CLUSTER_CIDR,
    NODE_RANGE,
    ApiServerAddress,
    Topology,
    node_cidr_mask,
)


def test_active_cni_is_the_lexically_first_config(tmp_path: Path) -> None:
    host = HostFs(tmp_path)
    assert host.active_cni() is None
    host.write_cni("10-flannel.conflist", "{}")
    host.write_cni("05-cilium.conflist", "{}")
    assert host.active_cni() == "05-cilium.conflist"
    assert host.back_up_others(keep="05-cilium.conflist") == ["10-flannel.conflist"]
    assert host.cni_configs() == ["05-cilium.conflist"]
    assert (host.cni_dir / "10-flannel.conflist.cilium_bak").exists()


def test_host_commands_move_files_and_ask_for_reboots(tmp_path: Path) -> None:
    host = HostFs(tmp_path)
    host.write_cni("05-cilium.conflist", "{}")
    host.write_cni("10-flannel.conflist.cilium_bak", "{}")
    script = ("rm -f /etc/cni/net.d/05-cilium.conflist && mv /etc/cni/net.d/10-flannel.conflist"
              ".cilium_bak /etc/cni/net.d/10-flannel.conflist")
    assert run_host_command(host, ["sh", "-c", script]).exit_code == 0
    assert host.cni_configs() == ["10-flannel.conflist"]
    assert run_host_command(host, ["/usr/bin/systemctl", "reboot"]).reboot
    assert not run_host_command(host, ["true"]).reboot
    outside = run_host_command(host, ["rm", "/etc/passwd"])
    assert outside.exit_code == 1 and "only has /etc/cni/net.d" in outside.output
    assert run_host_command(host, ["dd", "if=/dev/zero"]).exit_code == 127
    chained = run_host_command(host, ["sh", "-c", "mv /etc/cni/net.d/a /etc/cni/net.d/b && reboot"])
    assert chained.exit_code == 1 and not chained.reboot  # && stops at the first failure
    sequenced = run_host_command(host, ["sh", "-c", "mv /etc/cni/net.d/a /etc/cni/net.d/b; true"])
    assert sequenced.exit_code == 0  # ; goes on, and the last command's status counts


def test_host_local_skips_the_gateway_and_reuses_released_addresses() -> None:
    ipam = HostLocal("10.244.3.0/30")  # hosts .1 and .2; .1 is the bridge
    assert ipam.allocate() == "10.244.3.2"
    with pytest.raises(ExhaustedError):
        ipam.allocate()
    ipam.release("10.244.3.2")
    assert ipam.allocate() == "10.244.3.2"


def test_cluster_pool_blocks_do_not_overlap() -> None:
    pool = CidrSet("10.245.0.0/16", 24)
    assert pool.occupy("10.245.0.0/24") and pool.occupy("10.245.1.0/24")
    assert not pool.occupy("10.246.0.0/24")  # not one of this pool's blocks
    assert pool.allocate_next() == "10.245.2.0/24"
    small = CidrSet("10.245.0.0/23", 24)
    assert [small.allocate_next(), small.allocate_next()] == ["10.245.0.0/24", "10.245.1.0/24"]
    with pytest.raises(ExhaustedError):
        small.allocate_next()
    # Like the operator's CidrSet, a freed block is handed out again only after the others.
    small.release("10.245.0.0/24")
    assert small.allocate_next() == "10.245.0.0/24"


def test_the_operator_version_is_its_image_tag() -> None:
    assert operator_version("quay.io/cilium/operator-generic:v1.18.4") == "1.18.4"
    assert operator_version("quay.io/cilium/operator:v1.17.0@sha256:abc") == "1.17.0"
    assert operator_version("quay.io/cilium/operator-aws:v1.16.3") == "1.16.3"
    assert operator_version("quay.io/cilium/cilium:v1.18.4") is None
    assert operator_version("quay.io/cilium/operator-generic") is None


def test_the_agent_waits_for_the_crds_of_its_features_for_crd_wait_timeout() -> None:
    default = agent_crds({})
    assert "ciliumnodes.cilium.io" in default and "ciliumnetworkpolicies.cilium.io" in default
    assert "ciliumenvoyconfigs.cilium.io" not in default
    assert "ciliumenvoyconfigs.cilium.io" in agent_crds({"enable-envoy-config": "true"})
    assert "ciliumendpoints.cilium.io" not in agent_crds({"disable-endpoint-crd": "true"})
    assert go_duration("5m0s", 1.0) == 300.0 and go_duration("90s", 1.0) == 90.0
    assert go_duration("soon", 7.0) == 7.0


@pytest.mark.parametrize("selector, expected", [
    ({}, True),
    ({"matchLabels": {"role": "db"}}, True),
    ({"matchLabels": {"role": "web"}}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, True),
])
def test_label_selectors_in_product_and_simulator_agree(selector: dict, expected: bool) -> None:
    """Two matchers written apart (the drain's and the simulated agent's) give the answers
    apimachinery gives."""
    labels = {"role": "db", "zone": "a"}
    assert selector_matches(selector, labels) is expected
    assert selects(selector, labels) is expected


def test_simulator_selector_nil_selects_nothing_and_malformed_is_an_error() -> None:
    assert selects(None, {"role": "db"}) is False
    for malformed in ({"matchExpressions": [{"key": "zone", "operator": "In"}]},
                      {"matchExpressions": [{"key": "zone", "operator": "Exists",
                                             "values": ["a"]}]},
                      {"matchExpressions": [{"key": "zone", "operator": "Near",
                                             "values": ["a"]}]}):
        with pytest.raises(InvalidSelector):
            selects(malformed, {"zone": "a"})


def test_fault_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    write_faults(path, {"worker-1": {Fault.PROBE_FAILS}, "worker-2": set()})
    assert read_faults(path) == {"worker-1": {Fault.PROBE_FAILS}}
    book = FaultBook(path)
    assert book.refresh() is True and book.has("worker-1", Fault.PROBE_FAILS)
    assert book.refresh() is False
    path.write_text("worker-1: [melts]\n")
    with pytest.raises(FaultFileError, match="known faults: reboot-never-completes"):
        book.refresh()
    assert not book.has("worker-1", Fault.PROBE_FAILS)


def test_topology_names_roles_zones_and_unrouted_node_ips() -> None:
    topology = Topology.generate(workers=4, control_planes=2, zones=3)
    names = [n.name for n in topology.nodes]
    assert names == ["cp-1", "cp-2", "worker-1", "worker-2", "worker-3", "worker-4"]
    assert [n.zone for n in topology.nodes] == ["zone-a", "zone-b", "zone-c"] * 2
    assert len({n.internal_ip for n in topology.nodes}) == 6
    # Valid endpoint addresses (not loopback), in the range set aside for benchmarks.
    assert all(ipaddress.ip_address(n.internal_ip) in NODE_RANGE
               and not ipaddress.ip_address(n.internal_ip).is_loopback for n in topology.nodes)
    assert topology.nodes[0].internal_ip == "198.18.0.4"
    cp = topology.nodes[0]
    assert cp.labels()["node-role.kubernetes.io/control-plane"] == ""
    assert cp.taints() == [{"key": "node-role.kubernetes.io/control-plane",
                            "effect": "NoSchedule"}]
    assert topology.nodes[2].taints() == []


API = ApiServerAddress(host="192.0.2.10", port=6443)
SERVICE = Endpoint("10.96.0.1", 443)


def env_of(**variables: str) -> Callable[[str], str | None]:
    return variables.get


@pytest.mark.parametrize(("env", "expected"), [
    ({}, SERVICE),  # the kubelet's KUBERNETES_SERVICE_* for the `kubernetes` Service
    ({"KUBERNETES_SERVICE_HOST": "192.0.2.10", "KUBERNETES_SERVICE_PORT": "6443"},
     Endpoint("192.0.2.10", 6443)),
    ({"KUBERNETES_SERVICE_HOST": "cp.internal"}, Endpoint("cp.internal", 443)),
    ({"KUBERNETES_SERVICE_PORT": "http"}, "KUBERNETES_SERVICE_PORT='http' is not a port number"),
    ({"KUBERNETES_SERVICE_PORT": "0"}, "KUBERNETES_SERVICE_PORT=0 is not a port number"),
])
def test_a_pod_dials_its_env_before_the_kubelets_service_variables(
        env: dict[str, str], expected: Endpoint | str) -> None:
    assert dialled_endpoint(env_of(**env)) == expected


@pytest.mark.parametrize(("endpoint", "kube_proxy", "backends", "words"), [
    (Endpoint("192.0.2.10", 6443), False, set(), None),
    (SERVICE, True, {Endpoint("192.0.2.10", 6443)}, None),
    (SERVICE, False, {Endpoint("192.0.2.10", 6443)}, "no kube-proxy runs Ready on this node"),
    (SERVICE, True, set(), "EndpointSlice lists no endpoint"),
    (SERVICE, True, {Endpoint("127.0.0.1", 6443)}, "lists 127.0.0.1:6443, not the API server"),
    (Endpoint("127.0.0.1", 6443), True, {Endpoint("192.0.2.10", 6443)},
     "127.0.0.1 is this node itself"),
    (Endpoint("localhost", 6443), True, set(), "localhost is this node itself"),
    (Endpoint("192.0.2.10", 443), True, set(), "nothing answers at 192.0.2.10:443"),
    (Endpoint("10.96.0.1", 6443), True, {Endpoint("192.0.2.10", 6443)},
     "nothing answers at 10.96.0.1:6443"),
])
def test_only_the_node_visible_address_or_the_service_through_kube_proxy_reach_the_api_server(
        endpoint: Endpoint, kube_proxy: bool, backends: set[Endpoint], words: str | None) -> None:
    reason = why_unreachable(endpoint, API, kube_proxy, lambda: backends)
    assert (reason is None) if words is None else (reason is not None and words in reason)


def test_the_published_kubeconfigs_name_the_node_visible_address() -> None:
    expected = "https://192.0.2.10:6443"
    kube_proxy = kube_proxy_config_map(API)
    config = yaml.safe_load(kube_proxy["data"]["kubeconfig.conf"])
    assert config["clusters"][0]["cluster"]["server"] == expected
    assert config["contexts"][0]["context"]["cluster"] == config["clusters"][0]["name"]
    settings = yaml.safe_load(kube_proxy["data"]["config.conf"])
    assert settings["clientConnection"]["kubeconfig"] == "/var/lib/kube-proxy/kubeconfig.conf"
    info = yaml.safe_load(cluster_info_config_map(API, b"PEM")["data"]["kubeconfig"])
    assert info["clusters"][0]["cluster"] == {"certificate-authority-data": "UEVN",
                                              "server": expected}
    assert "users" not in info


def test_container_start_times_read_like_dockers() -> None:
    assert docker_time(1_767_323_045_123_450_000) == "2026-01-02T03:04:05.12345Z"
    assert docker_time(1_767_323_045_000_000_000) == "2026-01-02T03:04:05Z"


def test_container_records_count_restarts_and_requests_are_taken_once(tmp_path: Path) -> None:
    assert read_container(tmp_path, "worker-1") is None and take_restart_requests(tmp_path) == []
    first = record_start(tmp_path, "worker-1")
    again = record_start(tmp_path, "worker-1")
    assert (first.restarts, again.restarts) == (0, 1) and again.startedAt != first.startedAt
    assert read_container(tmp_path, "worker-1") == again
    request_restart(tmp_path, "worker-1")
    request_restart(tmp_path, "worker-2")
    assert take_restart_requests(tmp_path) == ["worker-1", "worker-2"]
    assert take_restart_requests(tmp_path) == []


def test_the_sandbox_docker_inspects_node_containers_like_docker(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = record_start(tmp_path, "worker-1")
    assert docker_shim.main(tmp_path, ["inspect", "-f", "{{.State.StartedAt}}", "worker-1"]) == 0
    assert capsys.readouterr().out == f"{record.startedAt}\n"
    assert docker_shim.main(tmp_path, ["inspect", "--format={{.Name}} {{ .State.Running }}",
                                       "worker-1"]) == 0
    assert capsys.readouterr().out == "/worker-1 true\n"
    assert docker_shim.main(tmp_path, ["inspect", "-f", "{{.State.Pid}}", "worker-1"]) == 1
    assert "can't evaluate field Pid" in capsys.readouterr().err
    assert docker_shim.main(tmp_path, ["inspect", "worker-1", "worker-9"]) == 1
    out, err = capsys.readouterr()
    assert '"StartedAt": "' + record.startedAt in out
    assert err == "Error response from daemon: No such container: worker-9\n"


def test_the_node_cidr_mask_leaves_a_pod_cidr_block_for_every_node() -> None:
    cluster = ipaddress.ip_network(CLUSTER_CIDR)
    for nodes in (1, 256, 257, 1000, 5000):
        mask = node_cidr_mask(nodes)
        assert 2 ** (mask - cluster.prefixlen) >= nodes, (nodes, mask)
        # ... and no smaller a block than that needs: kubeadm's /24 while it fits.
        assert mask == 24 or 2 ** (mask - 1 - cluster.prefixlen) < nodes, (nodes, mask)
