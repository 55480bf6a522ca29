"""Rolling one node back to flannel: what must be undone, in which order, and the host script
that restores flannel's CNI config.

The workflow runs these actions in order after the operator decides `rollback`; the activities
only carry them out.
"""

from __future__ import annotations

from enum import StrEnum

from plan.contract import HostCommandInput, NodeNote, NodeRef, NodeStep

ROLLBACK_COMMAND = "rollback"  # the node-shell pod's name part, so a retry finds its pod
# Moves Cilium's config out of the way and puts flannel's back, leaving a state that can be
# checked: the last command's status is the script's.
RESTORE_FLANNEL_SCRIPT = (
    "rm -f /etc/cni/net.d/05-cilium.conflist; "
    "test -e /etc/cni/net.d/10-flannel.conflist.cilium_bak && "
    "mv /etc/cni/net.d/10-flannel.conflist.cilium_bak /etc/cni/net.d/10-flannel.conflist; "
    "test -e /etc/cni/net.d/10-flannel.conflist"
)


class RollbackAction(StrEnum):
    DRAIN = "drain"  # a node that reboots holds no workload pods
    UNLABEL = "unlabel"  # the CiliumNodeConfig no longer selects the node
    # A running agent rewrites its CNI config whenever the directory changes (it watches it),
    # and it read the override when it started: a new agent without it must run first.
    RESTART_AGENT = "restart-agent"
    RESTORE_FLANNEL_CONFIG = "restore-flannel-config"
    REBOOT = "reboot"  # pods come back with flannel addresses
    VERIFY_ON_FLANNEL = "verify-on-flannel"
    UNCORDON = "uncordon"  # only if this run cordoned it


# The first step that can switch the node: the label selects it for the override.
_SWITCHING_STEPS = (NodeStep.LABEL, NodeStep.RESTART_AGENT, NodeStep.REBOOT, NodeStep.VERIFY,
                    NodeStep.UNCORDON)


def rollback_actions(failed_at: NodeStep | None) -> list[RollbackAction]:
    """What rolling back undoes, given the step the node stopped at.

    Before the label nothing was switched (a blocked drain, say): uncordoning is all. From the
    label on, the node may run Cilium's config, so it is switched back in full, draining first
    because the reboot must not take workload pods with it.
    """
    if failed_at not in _SWITCHING_STEPS:
        return [RollbackAction.UNCORDON]
    return list(RollbackAction)


def restore_flannel_config(target: NodeRef, image: str) -> HostCommandInput:
    return HostCommandInput(
        target=target, name=ROLLBACK_COMMAND, script=RESTORE_FLANNEL_SCRIPT, image=image,
        on_success=NodeNote(reason="CiliumMigrateRolledBack",
                            message="rolled back: the host's CNI configuration is flannel's "
                                    "again"))
