"""What a migration carries into its next run when it continues as new, and when it does.

A Temporal history holds at most 51,200 events, and every node adds some to the parent's. So
between waves, once no node is mid-flight and no Update handler is still running, a long run
continues as new under the same workflow ID (the CLI, which never names a run, reaches the new
one) and hands it everything it decided and was told: the plan and how far it got, the node
policies, each node's record, the approvals and pending gates, paused and halted. What the
run's activities learnt once (discovery, the install) is not repeated.

The carried state is one payload, and the server warns past 512 KiB. At 5,000 nodes with cloud
names (`ip-10-20-3-4.eu-west-1.compute.internal`) each copy of the node names is about 250 KB,
and the progress repeats the plan's: every wave's node list, and a record per node that, for
a node not yet started or migrated and folded, says no more than its name, wave and state. So
the carried progress leaves those out: a wave's node list that is the plan's is omitted, and
the records that say nothing more are one letter each, in the plan's order. Every other record
(blocked, failed, skipped, a catch-up node's) is carried whole.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_serializer, model_validator

from plan.facts import FlannelFacts
from plan.planner import MigrationPlan
from plan.policies import NodePolicies
from workflows.gates import GateBook
from workflows.progress import NodeProgress, NodeState, Progress

# Well below the hard limit, with room for a whole wave after the check: the check is made only
# between waves. The server's own suggestion (`is_continue_as_new_suggested`) may come earlier.
DEFAULT_CONTINUE_AS_NEW_AT = 8_000

# A planned node's record written as a letter: not started, or migrated and folded. WHOLE marks
# a record carried whole under `nodes`.
PENDING, MIGRATED_FOLDED, WHOLE = "p", "m", "."
# Where the carried progress keeps the letters, one string per planned wave.
PLANNED_NODES_KEY = "planned_nodes"


class Continuation(BaseModel):
    plan: MigrationPlan
    next_wave: int  # the position in plan.waves of the wave the next run starts with
    policies: NodePolicies
    flannel: FlannelFacts | None  # all the later steps need of the discovered facts
    progress: Progress
    gates: GateBook

    @field_serializer("progress")
    def _without_repeats(self, progress: Progress) -> dict[str, Any]:
        """Fields still at their default are left out (and come back as defaults); what the
        plan already says is left out too (see the module's docstring)."""
        written = progress.model_dump(mode="json", exclude_defaults=True)
        planned = [node for wave in self.plan.waves for node in wave.nodes]
        if list(progress.nodes)[:len(planned)] != planned:
            return written  # records in another order than the plan's: carried as they are
        for wave, wave_written in zip(self.plan.waves, written.get("waves", []), strict=False):
            if wave_written.get("index") == wave.index and wave_written.get("nodes") == wave.nodes:
                del wave_written["nodes"]
        nodes: dict[str, Any] = written.get("nodes", {})
        letters = []
        for wave in self.plan.waves:
            codes = [_letter(progress.nodes[node], wave.index) for node in wave.nodes]
            for node, code in zip(wave.nodes, codes, strict=True):
                if code != WHOLE:
                    del nodes[node]
            letters.append("".join(codes))
        written[PLANNED_NODES_KEY] = letters
        return written

    @model_validator(mode="before")
    @classmethod
    def _with_repeats(cls, data: Any) -> Any:
        """The carried progress made whole again from the plan it was written against."""
        if not isinstance(data, dict) or not isinstance(data.get("progress"), dict):
            return data
        progress = data["progress"]
        letters = progress.get(PLANNED_NODES_KEY)
        if letters is None:
            return data  # written whole
        plan = data["plan"]
        waves = plan["waves"] if isinstance(plan, dict) else [
            wave.model_dump() for wave in plan.waves]
        by_index = {wave["index"]: wave for wave in waves}
        for wave in progress.get("waves", []):
            if "nodes" not in wave:
                wave["nodes"] = list(by_index[wave["index"]]["nodes"])
        whole = progress.get("nodes", {})
        nodes: dict[str, Any] = {}
        for wave, wave_letters in zip(waves, letters, strict=True):
            for node, code in zip(wave["nodes"], wave_letters, strict=True):
                nodes[node] = whole[node] if code == WHOLE else _record(node, wave["index"],
                                                                        code)
        nodes.update((name, record) for name, record in whole.items() if name not in nodes)
        progress = {key: value for key, value in progress.items() if key != PLANNED_NODES_KEY}
        return {**data, "progress": {**progress, "nodes": nodes}}


def _letter(record: NodeProgress, wave: int) -> str:
    if record.wave == wave and record == NodeProgress(name=record.name, wave=wave):
        return PENDING
    if record.wave == wave and record == record.folded_record() and (
            record.state is NodeState.MIGRATED):
        return MIGRATED_FOLDED
    return WHOLE


def _record(node: str, wave: int, letter: str) -> dict[str, Any]:
    if letter == PENDING:
        return {"name": node, "wave": wave}
    if letter == MIGRATED_FOLDED:
        return {"name": node, "wave": wave, "state": NodeState.MIGRATED.value, "folded": True}
    raise ValueError(f"carried node {node}: unknown letter {letter!r}")
