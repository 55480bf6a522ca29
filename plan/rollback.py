"""Rolling one node back to flannel: what must be undone, and the host script that restores
flannel's CNI config.

The workflow runs these actions in order after the operator decides `rollback`; the activities
only carry them out.
"""

from __future__ import annotations

from enum import StrEnum

from plan.contract import HostCommandInput, NodeNote, NodeRef

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
    UNLABEL = "unlabel"  # the CiliumNodeConfig no longer selects the node
    RESTORE_FLANNEL_CONFIG = "restore-flannel-config"
    REBOOT = "reboot"  # pods come back with flannel addresses
    VERIFY_ON_FLANNEL = "verify-on-flannel"
    UNCORDON = "uncordon"  # only if this run cordoned it


# Today every rollback undoes the whole switch, whichever step failed.
ROLLBACK_ACTIONS: tuple[RollbackAction, ...] = tuple(RollbackAction)


def restore_flannel_config(target: NodeRef, image: str) -> HostCommandInput:
    return HostCommandInput(
        target=target, name=ROLLBACK_COMMAND, script=RESTORE_FLANNEL_SCRIPT, image=image,
        on_success=NodeNote(reason="CiliumMigrateRolledBack",
                            message="rolled back: the host's CNI configuration is flannel's "
                                    "again"))
