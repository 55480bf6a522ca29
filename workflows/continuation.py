"""What a migration carries into its next run when it continues as new, and when it does.

A Temporal history holds at most 51,200 events, and every node adds some to the parent's. So
between waves, once no node is mid-flight and no Update handler is still running, a long run
continues as new under the same workflow ID (the CLI, which never names a run, reaches the new
one) and hands it everything it decided and was told: the plan and how far it got, the node
policies, each node's record, the approvals and pending gates, paused and halted. What the
run's activities learnt once (discovery, the install) is not repeated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_serializer

from plan.facts import FlannelFacts
from plan.planner import MigrationPlan
from plan.policies import NodePolicies
from workflows.gates import GateBook
from workflows.progress import Progress

# Well below the hard limit, with room for a whole wave after the check: the check is made only
# between waves. The server's own suggestion (`is_continue_as_new_suggested`) may come earlier.
DEFAULT_CONTINUE_AS_NEW_AT = 8_000


class Continuation(BaseModel):
    plan: MigrationPlan
    next_wave: int  # the position in plan.waves of the wave the next run starts with
    policies: NodePolicies
    flannel: FlannelFacts | None  # all the later steps need of the discovered facts
    progress: Progress
    gates: GateBook

    @field_serializer("progress")
    def _without_defaults(self, progress: Progress) -> dict[str, Any]:
        """Thousands of node records must fit in one payload: fields still at their default
        are left out (and come back as defaults)."""
        return progress.model_dump(mode="json", exclude_defaults=True)
