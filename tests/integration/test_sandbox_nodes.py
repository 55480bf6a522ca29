"""The simulated nodes behave like real ones through a migration: CNI switch, reboot, probes,
and the injected faults the workflows must cope with."""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plan.contract import ProbeReport
from plan.spec import DEFAULT_ECHO_IMAGE, DEFAULT_IMAGE
from sandbox.simulator.faults import Fault, read_faults, write_faults
from tests.conftest import CILIUM_POOL, Sandbox
from tests.helpers import deployment, ready_pods, set_fault, wait_for

pytestmark = pytest.mark.sandbox

MIGRATION_LABEL = "io.cilium.migration/cilium-default"
NODE_CONFIG = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNodeConfig",
    "metadata": {"name": "cilium-default", "namespace": "kube-system"},
    "spec": {
        "nodeSelector": {"matchLabels": {MIGRATION_LABEL: "true"}},
        "defaults": {
            "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
            "custom-cni-conf": "false",
            "cni-chaining-mode": "none",
            "cni-exclusive": "true",
        },
    },
}


@pytest.fixture(scope="module")
def node_config(sandbox: Sandbox, cilium: None) -> None:
    sandbox.kube.create("/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs",
                        NODE_CONFIG)


def boot_id(sandbox: Sandbox, node: str) -> str:
    return str(sandbox.kube.get(f"/api/v1/nodes/{node}")["status"]["nodeInfo"]["bootID"])


def node_ready(sandbox: Sandbox, node: str) -> bool:
    conditions = sandbox.kube.get(f"/api/v1/nodes/{node}")["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def agent_on(sandbox: Sandbox, node: str) -> dict[str, Any] | None:
    pods = sandbox.kube.get("/api/v1/namespaces/kube-system/pods", labelSelector="k8s-app=cilium",
                            fieldSelector=f"spec.nodeName={node}")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return live[0] if live else None


def agent_ready(sandbox: Sandbox, node: str) -> bool:
    pod = agent_on(sandbox, node)
    return pod is not None and any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in pod["status"].get("conditions", []))


def restart_agent(sandbox: Sandbox, node: str) -> str:
    old = wait_for(lambda: agent_on(sandbox, node), f"an agent on {node}")
    sandbox.kube.delete(f"/api/v1/namespaces/kube-system/pods/{old['metadata']['name']}")
    wait_for(lambda: (p := agent_on(sandbox, node)) and p["metadata"]["uid"] !=
             old["metadata"]["uid"], "the DaemonSet to bring a new agent")
    return str(old["metadata"]["uid"])


def move_to_cilium(sandbox: Sandbox, node: str) -> None:
    sandbox.kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {MIGRATION_LABEL: "true"}}})
    restart_agent(sandbox, node)
    wait_for(lambda: agent_ready(sandbox, node), f"the new agent on {node} to be Ready")


def node_shell_pod(node: str, name: str, *host_command: str) -> dict[str, Any]:
    """The shape of the node-shell strategy's pod: privileged, host PID, pinned to the node."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node, "hostPID": True, "hostNetwork": True, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "shell", "image": DEFAULT_IMAGE,
                "command": ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net",
                            "--pid", "--", *host_command],
                "securityContext": {"privileged": True}}],
        },
    }


def probe_pod(node: str, name: str, peers: list[str], image: str = DEFAULT_IMAGE
              ) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"cilium-migrate.io/probe": "true"}},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "probe", "image": image,
                                 "env": [{"name": "PROBE_PEERS", "value": ",".join(peers)}]}]},
    }


def finished(sandbox: Sandbox, namespace: str, name: str) -> dict[str, Any] | None:
    pod = sandbox.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None


def pin(sandbox: Sandbox, namespace: str, name: str, node: str, replicas: int = 1,
        echo: bool = False) -> list[dict[str, Any]]:
    """``replicas`` pods on ``node``; ``echo``: agnhost netexec, which the probe's peers must
    be (they answer its HTTP request)."""
    wanted = deployment(name, replicas, node=node)
    if echo:
        wanted["spec"]["template"]["spec"]["containers"] = [{
            "name": "echo", "image": DEFAULT_ECHO_IMAGE,
            "args": ["netexec", "--http-port=8080", "--udp-port=-1"]}]
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", wanted)
    return list(wait_for(lambda: len(p := ready_pods(sandbox, namespace, f"app={name}"))
                         == replicas and p, f"{name} on {node}"))


@pytest.fixture
def inject(sandbox: Sandbox) -> Any:
    """Sets a fault on a node for one test, and clears it afterwards."""
    path = sandbox.state_dir / "faults.yaml"
    touched: list[tuple[str, Fault]] = []

    def set_fault(node: str, fault: Fault) -> None:
        faults = read_faults(path)
        faults.setdefault(node, set()).add(fault)
        write_faults(path, faults)
        touched.append((node, fault))

    yield set_fault
    faults = read_faults(path)
    for node, fault in touched:
        faults.get(node, set()).discard(fault)
    write_faults(path, faults)


def test_a_matching_node_config_and_a_restarted_agent_switch_the_node_to_cilium(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any) -> None:
    node = claim_worker()
    before = pin(sandbox, namespace, "before", node)[0]
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == ["10-flannel.conflist"]

    # The override is read at agent start: labelling alone changes nothing.
    sandbox.kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {MIGRATION_LABEL: "true"}}})
    assert not (sandbox.cni_dir(node) / "05-cilium.conflist").exists()
    restart_agent(sandbox, node)
    wait_for(lambda: (sandbox.cni_dir(node) / "05-cilium.conflist").exists(),
             "the agent to write 05-cilium.conflist")
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == [
        "05-cilium.conflist", "10-flannel.conflist.cilium_bak"]

    after = pin(sandbox, namespace, "after", node)[0]
    cilium_node = sandbox.kube.get(f"/apis/cilium.io/v2/ciliumnodes/{node}")
    block = cilium_node["spec"]["ipam"]["podCIDRs"][0]
    assert ipaddress.ip_network(block).subnet_of(ipaddress.ip_network(CILIUM_POOL))
    assert ipaddress.ip_address(after["status"]["podIP"]) in ipaddress.ip_network(block)
    # Pods started before the switch keep their flannel address until they restart.
    assert ipaddress.ip_address(before["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")


def test_a_node_without_the_label_stays_on_flannel_after_an_agent_restart(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any) -> None:
    node = claim_worker()
    restart_agent(sandbox, node)
    wait_for(lambda: agent_ready(sandbox, node), "the new agent to be Ready")
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == ["10-flannel.conflist"]
    pod = pin(sandbox, namespace, "stays", node)[0]
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")


def test_a_node_shell_reboot_changes_the_boot_id_once_and_the_node_returns(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any) -> None:
    node = claim_worker()
    move_to_cilium(sandbox, node)
    workload = pin(sandbox, namespace, "survivor", node)[0]
    before = boot_id(sandbox, node)
    seen: set[str] = {before}

    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "reboot", "systemctl", "reboot"))
    wait_for(lambda: seen.add(boot_id(sandbox, node)) or len(seen) > 1, "a new bootID")
    wait_for(lambda: seen.add(boot_id(sandbox, node)) or (node_ready(sandbox, node) and
             agent_ready(sandbox, node)), "the node and its agent to be Ready again")
    assert len(seen) == 2, f"bootID changed more than once: {seen}"
    assert finished(sandbox, namespace, "reboot")["status"]["phase"] == "Succeeded"

    # The pod that lived through the reboot restarted with an address from the now-active CNI.
    restarted = wait_for(lambda: [p for p in ready_pods(sandbox, namespace, "app=survivor")
                                  if p["status"]["containerStatuses"][0]["restartCount"] == 1],
                         "the workload to restart after the reboot")[0]
    assert restarted["metadata"]["uid"] == workload["metadata"]["uid"]
    assert ipaddress.ip_address(restarted["status"]["podIP"]) in ipaddress.ip_network(CILIUM_POOL)


def test_a_pod_that_lived_through_the_switch_has_one_address_after_the_reboot(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any) -> None:
    """Its flannel address stays until the reboot re-creates its sandbox; then it has the
    Cilium one alone (the API server refuses two addresses of one family in podIPs)."""
    node = claim_worker()
    workload = pin(sandbox, namespace, "switcher", node)[0]
    old_ip = workload["status"]["podIP"]
    assert ipaddress.ip_address(old_ip) not in ipaddress.ip_network(CILIUM_POOL)
    move_to_cilium(sandbox, node)
    before = boot_id(sandbox, node)
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "reboot", "reboot"))
    wait_for(lambda: boot_id(sandbox, node) != before, "a new bootID")
    restarted = wait_for(lambda: [p for p in ready_pods(sandbox, namespace, "app=switcher")
                                  if p["status"]["containerStatuses"][0]["restartCount"] == 1],
                         "the workload to restart after the reboot")[0]
    address = restarted["status"]["podIP"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(CILIUM_POOL)
    assert restarted["status"]["podIPs"] == [{"ip": address}]


def test_after_a_reboot_the_nodes_pods_are_not_ready_until_their_containers_run_again(
        sandbox: Sandbox, namespace: str, claim_worker: Any, inject: Any) -> None:
    """A booting kubelet finds its pods' containers dead and reports them NotReady before it
    starts them again: the window in which a DaemonSet's numberReady is short."""
    node = claim_worker()
    flannel = sandbox.kube.get("/api/v1/namespaces/kube-flannel/pods",
                               fieldSelector=f"spec.nodeName={node}")["items"][0]
    name = flannel["metadata"]["name"]
    seen: list[tuple[int, bool]] = []  # (restartCount, Ready) of every version of the pod

    def follow(items: list[dict[str, Any]]) -> bool:
        for pod in items:
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in pod["status"].get("conditions", []))
            restarts = pod["status"]["containerStatuses"][0]["restartCount"]
            if not seen or seen[-1] != (restarts, ready):
                seen.append((restarts, ready))
        return bool(seen) and seen[-1] == (1, True)

    inject(node, Fault.REBOOT_NEVER_COMPLETES)
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "reboot", "reboot"))
    wait_for(lambda: not node_ready(sandbox, node), "the node to go down")
    with ThreadPoolExecutor(1) as pool:
        watching = pool.submit(sandbox.kube.wait, "/api/v1/namespaces/kube-flannel/pods",
                               follow, 120, fieldSelector=f"metadata.name={name}")
        wait_for(lambda: seen, "the watch to start")
        path = sandbox.state_dir / "faults.yaml"  # the operator power-cycles the machine
        faults = read_faults(path)
        faults[node].discard(Fault.REBOOT_NEVER_COMPLETES)
        write_faults(path, faults)
        assert watching.result(timeout=150), f"the flannel pod never ran again: {seen}"
    # Ready before the reboot, NotReady once the kubelet is back, Ready with a restart.
    assert [ready for _, ready in seen] == [True, False, True], seen


def test_the_kubelet_writes_a_pods_ready_condition_again_after_a_controller_changed_it(
        sandbox: Sandbox, namespace: str) -> None:
    """The node lifecycle controller sets Ready=False on every pod of a node it saw NotReady,
    and may do so after a rebooted node's kubelet already reported the pod Ready; the kubelet's
    status sync writes its own status again. (Without it a PodDisruptionBudget counted the pod
    unhealthy for good and blocked every later drain.)"""
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                        deployment("steady", 1))
    pod = wait_for(lambda: ready_pods(sandbox, namespace, "app=steady"), "the pod to be Ready")[0]
    path = f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status"
    sandbox.kube.patch(path, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "NodeNotReady"}]}})
    conditions = {c["type"]: c["status"] for c in sandbox.kube.get(path)["status"]["conditions"]}
    assert conditions["Ready"] == "False" and conditions["ContainersReady"] == "True"
    wait_for(lambda: ready_pods(sandbox, namespace, "app=steady"),
             "the kubelet to report the pod Ready again", timeout=60)


def test_rollback_through_node_shell_restores_flannel(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any) -> None:
    node = claim_worker()
    move_to_cilium(sandbox, node)
    net_d = "/etc/cni/net.d"
    script = (f"rm -f {net_d}/05-cilium.conflist && "
              f"mv {net_d}/10-flannel.conflist.cilium_bak {net_d}/10-flannel.conflist")
    switched = ["05-cilium.conflist", "10-flannel.conflist.cilium_bak"]

    # The running agent read the override at start and watches the directory: it undoes the
    # script at once, label or no label (cilium daemon/cmd/cni/config.go).
    sandbox.kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {MIGRATION_LABEL: None}}})
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "too-early", "sh", "-c", script))
    pod = wait_for(lambda: finished(sandbox, namespace, "too-early"), "the first script")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == switched

    restart_agent(sandbox, node)  # without the label the new agent keeps its hands off
    wait_for(lambda: agent_ready(sandbox, node), "the agent to be Ready")
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == switched
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "rollback", "sh", "-c", script))
    pod = wait_for(lambda: finished(sandbox, namespace, "rollback"), "the rollback pod")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert sorted(p.name for p in sandbox.cni_dir(node).iterdir()) == ["10-flannel.conflist"]
    back = pin(sandbox, namespace, "back", node)[0]
    assert ipaddress.ip_address(back["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")


def test_probe_reports_reachability_across_overlays(
        sandbox: Sandbox, node_config: None, namespace: str, claim_worker: Any,
        inject: Any) -> None:
    cilium_node, flannel_node = claim_worker(), claim_worker()
    move_to_cilium(sandbox, cilium_node)
    peers = [pin(sandbox, namespace, "on-cilium", cilium_node, echo=True)[0]["status"]["podIP"],
             pin(sandbox, namespace, "on-flannel", flannel_node, echo=True)[0]["status"]["podIP"]]

    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        probe_pod(cilium_node, "probe-ok", peers))
    good = wait_for(lambda: finished(sandbox, namespace, "probe-ok"), "the probe")
    result = report_of(good)
    assert good["status"]["phase"] == "Succeeded"
    # The real API server's answer to an anonymous /healthz: allowed by default RBAC.
    assert result.api_server.status == 200 and result.peers == dict.fromkeys(peers, True)
    assert ipaddress.ip_address(result.pod_ip) in ipaddress.ip_network(CILIUM_POOL)

    # busybox before 1.37 cannot finish the TLS handshake with the (Go) API server.
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        probe_pod(cilium_node, "probe-old", peers, image="busybox:1.36"))
    old = wait_for(lambda: finished(sandbox, namespace, "probe-old"), "the old probe")
    result = report_of(old)
    assert old["status"]["phase"] == "Failed" and result.api_server.status is None
    assert "handshake failure" in result.api_server.error

    inject(cilium_node, Fault.PROBE_FAILS)
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        probe_pod(cilium_node, "probe-bad", peers))
    bad = wait_for(lambda: finished(sandbox, namespace, "probe-bad"), "the failing probe")
    result = report_of(bad)
    assert bad["status"]["phase"] == "Failed"
    assert result.api_server.status is None and not any(result.peers.values())


def report_of(pod: dict[str, Any]) -> ProbeReport:
    """The probe's termination message, held to the product's contract."""
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert isinstance(json.loads(message), dict)
    return ProbeReport.model_validate_json(message)


def test_fault_agent_never_ready_keeps_the_new_agent_unready(
        sandbox: Sandbox, node_config: None, claim_worker: Any, inject: Any) -> None:
    node, yardstick = claim_worker(), claim_worker()
    inject(node, Fault.AGENT_NEVER_READY)
    restart_agent(sandbox, node)
    # A healthy node's agent, restarted just after, becoming Ready is the yardstick for
    # "long enough" instead of a fixed sleep.
    restart_agent(sandbox, yardstick)
    wait_for(lambda: agent_ready(sandbox, yardstick), "the yardstick agent to be Ready")
    agent = agent_on(sandbox, node)
    assert agent is not None and agent["status"].get("phase") == "Running"
    assert not agent_ready(sandbox, node)
    # Leave the shared sandbox healthy for the tests after this one: a new agent, no fault.
    set_fault(sandbox.state_dir, node, Fault.AGENT_NEVER_READY, on=False)
    restart_agent(sandbox, node)
    wait_for(lambda: agent_ready(sandbox, node), "the agent to be Ready without the fault")


def test_fault_reboot_never_completes_leaves_the_node_not_ready(
        sandbox: Sandbox, namespace: str, claim_worker: Any, inject: Any) -> None:
    node = claim_worker()
    before = boot_id(sandbox, node)
    inject(node, Fault.REBOOT_NEVER_COMPLETES)
    sandbox.kube.create(f"/api/v1/namespaces/{namespace}/pods",
                        node_shell_pod(node, "reboot", "reboot"))
    wait_for(lambda: not node_ready(sandbox, node), "the node to go NotReady")
    assert finished(sandbox, namespace, "reboot")["status"]["phase"] == "Succeeded"
    assert boot_id(sandbox, node) == before
    assert not node_ready(sandbox, node)

    # An operator power-cycling the machine: clearing the fault lets the node boot.
    path = sandbox.state_dir / "faults.yaml"
    faults = read_faults(path)
    faults[node].discard(Fault.REBOOT_NEVER_COMPLETES)
    write_faults(path, faults)
    wait_for(lambda: node_ready(sandbox, node), "the node to come back after a power cycle")
    assert boot_id(sandbox, node) != before


def test_fault_ignore_termination_keeps_a_pod_for_its_grace_period(
        sandbox: Sandbox, namespace: str, claim_worker: Any, inject: Any) -> None:
    node = claim_worker()
    inject(node, Fault.IGNORE_TERMINATION)
    body = deployment("stubborn", 1, node=node)
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 3600
    sandbox.kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", body)
    pod = wait_for(lambda: ready_pods(sandbox, namespace, "app=stubborn"), "stubborn pod")[0]
    path = f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}"
    sandbox.kube.delete(path)
    # A well-behaved pod on another node goes in well under a second; this one stays.
    control = pin(sandbox, namespace, "polite", sandbox.workers()[0])[0]
    sandbox.kube.delete(f"/api/v1/namespaces/{namespace}/pods/{control['metadata']['name']}")
    wait_for(lambda: sandbox.kube.get_or_none(
        f"/api/v1/namespaces/{namespace}/pods/{control['metadata']['name']}") is None,
        "the polite pod to go")
    still = sandbox.kube.get_or_none(path)
    assert still is not None and still["metadata"].get("deletionTimestamp")
    sandbox.kube.delete(path, {"gracePeriodSeconds": 0})  # what a force delete does
