"""Is a worker serving a cluster's steps? A cluster that names its own task queue has its
steps wait there until a worker holding its credentials polls it; without one a migration
looks stuck. The server knows which workers polled a queue lately (DescribeTaskQueue), so the
views can say what is missing instead of leaving the operator to guess.

The server remembers a poller for minutes after its last poll (5 by default), so a worker
that has just stopped would still count. A live worker polls again at least every long-poll
period (about a minute) unless all of its activity slots are busy, so one unseen for longer
than QUIET is reported too, as stopped or fully busy."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from plan.duration import format_duration

ASK_TIMEOUT = timedelta(seconds=5)
# Longer than a long poll (the server answers an idle poll after about 60 s) plus its return.
QUIET = timedelta(seconds=90)


async def absent_worker(client: Client, task_queue: str) -> str | None:
    """Why no worker seems to serve ``task_queue``, in a few words ("none polls it", "none
    polled it for 3m: stopped, or every slot busy"); None when one does, or when the server
    cannot tell (a view must not fail for a hint)."""
    try:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=client.namespace,
                                     task_queue=TaskQueue(name=task_queue),
                                     task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            timeout=ASK_TIMEOUT)
    except RPCError:
        return None
    return absence(answer.pollers, datetime.now(UTC))


def absence(pollers: Iterable[PollerInfo], now: datetime) -> str | None:
    seen = [p.last_access_time.ToDatetime(tzinfo=UTC) for p in pollers
            if p.HasField("last_access_time")]
    if not seen:
        return "no worker polls it"
    quiet = now - max(seen)
    if quiet <= QUIET:
        return None
    quiet = timedelta(seconds=int(quiet.total_seconds()))
    return (f"no worker polled it for {format_duration(quiet)} (stopped, or every one of its "
            "slots busy)")


async def absent_worker_hint(client: Client, cluster: str, task_queue: str) -> str | None:
    """A line saying that no worker serves ``task_queue`` and how to start one; None when one
    does."""
    why = await absent_worker(client, task_queue)
    if why is None:
        return None
    return (f"task queue {task_queue}, where cluster {cluster}'s steps run: {why}. Start a "
            f"worker that holds its credentials (`cilium-migrate worker --task-queue "
            f"{task_queue}`, or the worker chart with clusterName={cluster}); the steps go on "
            "once it is back")
