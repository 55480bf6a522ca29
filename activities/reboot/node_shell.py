"""Reboot through a node-shell pod that runs `systemctl reboot` on the host.

The pod's name holds the bootID the node reboots away from (taken before the reboot step ever
ran): a retried step finds the pod of its predecessor instead of asking for a second reboot.
"""

from __future__ import annotations

from activities.host import node_shell_pod, pod_name, pod_state
from activities.kubeapi import Kube, Obj, boot_id
from plan.contract import RebootInput


class NodeShellReboot:
    witness_name = "bootID"

    def boot_witness(self, kube: Kube, node: Obj) -> str:
        return boot_id(node)

    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        pod = node_shell_pod(_name(request), request.target.node, request.policy.image,
                             ["systemctl", "reboot"], purpose="reboot")
        kube.create(f"/api/v1/namespaces/{request.cilium_namespace}/pods", pod)  # 409: ours

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        path = f"/api/v1/namespaces/{request.cilium_namespace}/pods/{_name(request)}"
        if rebooted:
            kube.delete(path)
            return ""
        # Kept, so that retrying the step waits for this reboot instead of asking again.
        return (f"reboot pod {request.cilium_namespace}/{_name(request)} is "
                f"{pod_state(kube.get_or_none(path))}; delete it to ask for a new reboot")


def _name(request: RebootInput) -> str:
    return pod_name("reboot", request.target.node, request.before.boot_witness[:8])
