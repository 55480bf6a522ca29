"""Is a worker serving a cluster's steps? A cluster that names its own task queue has its
steps wait there until a worker holding its credentials polls it; without one a migration
looks stuck. The server knows which workers polled a queue lately (DescribeTaskQueue), so the
views can say what is missing instead of leaving the operator to guess. It remembers a poller
for a few minutes, so a worker that has just stopped still counts for that long."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

ASK_TIMEOUT = timedelta(seconds=5)


async def absent_worker_hint(client: Client, cluster: str, task_queue: str) -> str | None:
    """A line saying that no worker serves ``task_queue`` and how to start one; None when one
    does (or when the server cannot tell: a view must not fail for a hint)."""
    try:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=client.namespace,
                                     task_queue=TaskQueue(name=task_queue),
                                     task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            timeout=ASK_TIMEOUT)
    except RPCError:
        return None
    if answer.pollers:
        return None
    return (f"no worker polls task queue {task_queue}, where cluster "
            f"{cluster}'s steps run. Start one that holds its credentials (`cilium-migrate "
            f"worker --task-queue {task_queue}`, or the worker chart with "
            f"clusterName={cluster}); the steps go on once it is back")
