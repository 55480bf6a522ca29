"""What a rollback undoes depends on where the node stopped."""

from __future__ import annotations

import pytest

from plan.contract import NodeStep
from plan.rollback import RollbackAction, rollback_actions


@pytest.mark.parametrize("failed_at", [None, NodeStep.SNAPSHOT, NodeStep.CORDON, NodeStep.DRAIN])
def test_before_the_label_nothing_was_switched(failed_at: NodeStep | None) -> None:
    assert rollback_actions(failed_at) == [RollbackAction.UNCORDON]


@pytest.mark.parametrize("failed_at", [NodeStep.LABEL, NodeStep.RESTART_AGENT, NodeStep.REBOOT,
                                       NodeStep.VERIFY, NodeStep.UNCORDON])
def test_from_the_label_on_the_switch_is_undone_with_the_agent_restarted_first(
        failed_at: NodeStep) -> None:
    actions = rollback_actions(failed_at)
    assert actions[0] is RollbackAction.DRAIN and actions[-1] is RollbackAction.UNCORDON
    order = actions.index
    # The running agent read the override at start and rewrites the CNI directory on change:
    # it must be replaced (without the label) before flannel's config is put back.
    assert (order(RollbackAction.UNLABEL) < order(RollbackAction.RESTART_AGENT)
            < order(RollbackAction.RESTORE_FLANNEL_CONFIG) < order(RollbackAction.REBOOT)
            < order(RollbackAction.VERIFY_ON_FLANNEL))
