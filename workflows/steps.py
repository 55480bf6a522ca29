"""How the workflows call activities: timeouts, retries, heartbeats and cancellation, in one place.

Transient failures (API throttling, server errors, lost connections) are retried with backoff
for as long as the step's own deadline allows; the typed failures listed in `StepError` are
raised non-retryable by the activities and reach the workflow, which asks the operator.

Every step has a heartbeat timeout, and every activity heartbeats while it runs (the worker does
it in the background, repeating the step's own latest details: `worker.heartbeats`), so a
worker that dies mid-step is noticed within one heartbeat timeout, whatever the step, and the
step runs again on another worker; a long step resumes from its last heartbeat's details.

A step runs where its cluster's credentials are: on the task queue the step's cluster names
(`ClusterRef.task_queue`, from the spec's `cluster.taskQueue`), served by a worker that holds
only that cluster's credentials, while the workflows run on the queue the migration was started
on. A step that names no cluster (rendering the chart, offline) and every step of a cluster
that names no queue run on the workflow's own queue.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from plan.policies import ClusterRef

T = TypeVar("T")
# Runs recorded before a cluster could name its own task queue scheduled every step on the
# workflow's queue. The patch is asked only for a cluster that names a queue, so those runs
# (whose specs name none) replay unchanged.
CLUSTER_QUEUE_PATCH = "steps-on-the-cluster-task-queue"

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=30))
# Every step's heartbeat timeout; the worker heartbeats for a running step at least every third
# of it (worker.heartbeats). A worker silent this long is presumed dead and the step runs again
# on another, a long step resuming from its last heartbeat. Not shorter: a live worker whose
# event loop is held up (32 activity threads sharing the GIL on a busy node) must not pass for
# dead, or the step runs twice at once. 30 s finds a dead worker 3 to 11 times sooner than the
# start-to-close timeouts did (90 s for most short steps, 5.5 min for flannel removal).
HEARTBEAT = timedelta(seconds=30)
SHORT = timedelta(seconds=60)
# A watcher heartbeats every second anyway, and the wave waits for its cancellation to complete
# (the figures come with it) before the next wave: the SDK passes heartbeats to the server, and
# so hears of a cancellation, at most every 0.8 x this. At 10 s that cost 3.8 s a wave on
# average (bench/migration_bench.py, 100 nodes: 45 s of the 54 s between waves); at 3 s about
# a second. Shorter than HEARTBEAT because a watcher's retry loses nothing: it resumes from its
# last heartbeat's figures, should a held-up worker pass for dead.
WATCH_HEARTBEAT = timedelta(seconds=3)


async def run_step(name: str, argument: Any, result_type: type[T], *,
                   timeout: timedelta = SHORT, long: bool = False) -> T:
    """Runs one activity, whose worker heartbeats for it (a dead worker is noticed within
    HEARTBEAT). ``long`` steps also report their own progress in heartbeats, and a cancellation
    waits until the step has stopped (a drain must not go on evicting after the run was
    aborted); a short step's cancellation is only asked for."""
    result: T = await workflow.execute_activity(
        name, argument, result_type=result_type, task_queue=cluster_queue(argument),
        # Retries of transient errors fit inside this budget; the step's own deadline is inside.
        schedule_to_close_timeout=timeout * 3 + timedelta(minutes=2),
        start_to_close_timeout=timeout + timedelta(seconds=30),
        # Not part of the command's determinism check: runs recorded without it replay.
        heartbeat_timeout=HEARTBEAT,
        retry_policy=RETRY,
        cancellation_type=(workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
                           if long else workflow.ActivityCancellationType.TRY_CANCEL),
    )
    return result


def start_watch(name: str, argument: Any, result_type: type[T], *,
                duration: timedelta = timedelta(hours=1)) -> workflow.ActivityHandle[T]:
    """Starts a step that watches until it is cancelled (or ``duration`` ends), heartbeating.
    Cancelling it waits for its completion, which carries what it saw: a watcher returns its
    findings when cancelled instead of failing. A worker that dies mid-watch is replaced after
    one heartbeat timeout; the new attempt resumes from the last heartbeat."""
    return workflow.start_activity(
        name, argument, result_type=result_type, task_queue=cluster_queue(argument),
        start_to_close_timeout=duration + timedelta(minutes=5),
        heartbeat_timeout=WATCH_HEARTBEAT, retry_policy=RETRY,
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)


def cluster_queue(argument: Any) -> str | None:
    """The task queue of the cluster a step's input names (itself, its ``cluster``, or its
    ``target``'s), or None: the workflow's own queue."""
    ref = argument if isinstance(argument, ClusterRef) else getattr(argument, "cluster", None)
    if ref is None:
        ref = getattr(getattr(argument, "target", None), "cluster", None)
    queue = ref.task_queue if isinstance(ref, ClusterRef) else None
    if queue and workflow.patched(CLUSTER_QUEUE_PATCH):
        return queue
    return None


def step_failure(error: BaseException) -> ApplicationError | None:
    """The typed failure an activity raised, or None (cancellations and timeouts included)."""
    if is_cancelled_exception(error):
        return None
    if isinstance(error, ActivityError) and isinstance(error.cause, ApplicationError):
        return error.cause
    return None


def describe_failure(error: BaseException) -> str:
    """One line for the operator: the deepest message of an activity failure chain."""
    messages = []
    current: BaseException | None = error
    while current is not None:
        if str(current):
            messages.append(str(current))
        current = current.__cause__
    return messages[-1] if messages else type(error).__name__
