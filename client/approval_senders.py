"""Who sent each approval: the identity of the Temporal client whose Update approved a gate.

The workflow records the name the approver claimed (`approve --as`) and the Update's ID; the
handler is never told who sent it. The server, though, writes the identity the sending client
declared when it connected (`--identity`) into the Update's `WorkflowExecutionUpdateAccepted`
event. Here that identity is read back from the migration's history and set beside each
approval. Neither name is checked by Temporal unless the namespace is locked down: README,
"Who may approve".

A long migration continues as new (client/history_runs.py), and an approval carried into a later
run was accepted in an earlier run's history. The runs are read latest first and only until
every approval asked about has its sender, so the status of a run with many runs behind it
reads the few that hold its latest approvals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from client.history_runs import MAX_RUNS
from workflows.identity import APPROVE_UPDATE
from workflows.messages import ApproveRequest
from workflows.progress import Approval


@dataclass(frozen=True)
class AcceptedApproval:
    """One accepted `approve` Update, as its history event records it."""

    update_id: str
    gate: str | None  # None when the request's payload could not be read
    identity: str


async def accepted_approval(event: HistoryEvent, converter: DataConverter
                            ) -> AcceptedApproval | None:
    if not event.HasField("workflow_execution_update_accepted_event_attributes"):
        return None
    request = event.workflow_execution_update_accepted_event_attributes.accepted_request
    if request.input.name != APPROVE_UPDATE:
        return None
    try:
        [sent] = await converter.decode(request.input.args.payloads, [ApproveRequest])
        gate: str | None = sent.gate
    except Exception:  # noqa: BLE001 - an unreadable request still names its Update ID
        gate = None
    return AcceptedApproval(request.meta.update_id, gate, request.meta.identity)


def sender_of(approval: Approval, accepted: list[AcceptedApproval]) -> AcceptedApproval | None:
    """The Update that made ``approval``: the same gate, and the same Update ID when the
    approval recorded one. A gate is approved once per migration, so for an approval recorded
    before the ID was, the gate alone finds it."""
    for update in accepted:
        if update.gate == approval.gate and approval.update_id in (None, update.update_id):
            return update
    return None


class ApprovalSenders:
    """Fills in each approval's `client_identity`, remembering what it read: an accepted
    event never changes, so `status --watch` reads history again only for new approvals."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._known: dict[tuple[str, str, datetime], str | None] = {}

    async def fill(self, workflow_id: str, run_id: str | None,
                   approvals: list[Approval]) -> list[Approval]:
        """``approvals`` with their senders, read from the chain of runs that ends with
        ``run_id`` (the latest when None). A sender not found (the history is gone, say)
        stays unknown rather than failing the caller."""
        def key(approval: Approval) -> tuple[str, str, datetime]:
            return workflow_id, approval.gate, approval.at

        wanted = [a for a in approvals if key(a) not in self._known]
        if wanted:
            found = await self._read(workflow_id, run_id, wanted)
            for approval in wanted:
                sender = sender_of(approval, found)
                self._known[key(approval)] = sender.identity if sender else None
        return [a.model_copy(update={"client_identity": self._known[key(a)]})
                for a in approvals]

    async def _read(self, workflow_id: str, run_id: str | None,
                    wanted: list[Approval]) -> list[AcceptedApproval]:
        found: list[AcceptedApproval] = []
        converter = self.client.data_converter
        run, runs = run_id, 0
        try:
            while wanted and runs < MAX_RUNS:
                previous: str | None = None
                handle = self.client.get_workflow_handle(workflow_id, run_id=run)
                async for event in handle.fetch_history_events():
                    if event.HasField("workflow_execution_started_event_attributes"):
                        started = event.workflow_execution_started_event_attributes
                        previous = started.continued_execution_run_id or None
                    update = await accepted_approval(event, converter)
                    if update is not None:
                        found.append(update)
                wanted = [a for a in wanted if sender_of(a, found) is None]
                if previous is None:
                    break
                run, runs = previous, runs + 1
        except RPCError:
            pass  # what was read so far still counts
        return found
