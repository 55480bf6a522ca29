"""Every step has a heartbeat timeout and every activity heartbeats while it runs
(`worker.heartbeats`): a step whose worker dies is retried after one heartbeat timeout, short
steps included, while a slow step whose worker lives is never presumed dead, and a long step's
resume details survive the background heartbeats.

A dead worker is played by `DeadAfter`: from the moment the activity calls `die()`, no
heartbeat of that attempt (its own nor the background ones) reaches the server and it never
returns, which is all Temporal can tell of a dead worker. The workflows run unsandboxed so that
the steps' heartbeat timeout can be a few seconds here; the steps run on the product's worker
(`build_worker`), on the cluster's own task queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, client, worker
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import WorkflowHistory
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from plan.contract import (
    Activity,
    DrainInput,
    DrainResult,
    NodeConfigInput,
    RemoveFlannelInput,
    RemoveFlannelResult,
)
from tests.fakes import FakeCluster
from tests.workflows.support import spec, start
from worker.build import WORKFLOWS, build_worker
from workflows import steps
from workflows.identity import node_workflow_id
from workflows.progress import Phase, Progress

# Short enough for a test, long enough for background heartbeats on a busy machine.
TEST_HEARTBEAT = timedelta(seconds=3)


@pytest.fixture(autouse=True)
def short_heartbeat_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "HEARTBEAT", TEST_HEARTBEAT)


def _attempt_key(info: activity.Info) -> tuple[str, str, int]:
    return info.workflow_id or "", info.activity_id, info.attempt


class DeadAfter(client.Interceptor, worker.Interceptor):
    """The worker of an activity attempt that called `die()` looks dead to Temporal. A client
    interceptor that is a worker one too, so the worker puts it outside its own interceptors:
    the background heartbeats pass through it."""

    def __init__(self) -> None:
        self.dead: set[tuple[str, str, int]] = set()
        self.released = threading.Event()  # lets the dead attempts end when the test does

    def die(self) -> None:
        """Called by the activity: from now on it is silent, and it never returns."""
        self.dead.add(_attempt_key(activity.info()))

    def intercept_activity(self, next: worker.ActivityInboundInterceptor
                           ) -> worker.ActivityInboundInterceptor:
        return _SilencedInbound(next, self)


class _SilencedInbound(worker.ActivityInboundInterceptor):
    def __init__(self, next: worker.ActivityInboundInterceptor, dead: DeadAfter) -> None:
        super().__init__(next)
        self.dead = dead

    def init(self, outbound: worker.ActivityOutboundInterceptor) -> None:
        super().init(_SilencedOutbound(outbound, self.dead))


class _SilencedOutbound(worker.ActivityOutboundInterceptor):
    def __init__(self, next: worker.ActivityOutboundInterceptor, dead: DeadAfter) -> None:
        super().__init__(next)
        self.dead = dead

    def heartbeat(self, *details: Any) -> None:
        if _attempt_key(self.info()) not in self.dead.dead:
            super().heartbeat(*details)


def hang(dead: DeadAfter) -> None:
    """A dead attempt in a thread: never returns (until the test ends)."""
    while not dead.released.wait(0.05):
        pass


def attempts(history: WorkflowHistory, activity_type: str
             ) -> list[tuple[int, TimeoutType.ValueType | None]]:
    """Per scheduled step of this type: the attempt that ended it, and how the attempt before
    it timed out, if it did."""
    scheduled = {e.event_id for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name
                 == activity_type}
    found = []
    for event in history.events:
        started = event.activity_task_started_event_attributes
        if (event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                and started.scheduled_event_id in scheduled):
            failure = started.last_failure
            timed_out = (failure.timeout_failure_info.timeout_type
                         if failure.HasField("timeout_failure_info") else None)
            found.append((started.attempt, timed_out))
    return found


@pytest.fixture
def dead() -> Iterator[DeadAfter]:
    dead = DeadAfter()
    yield dead
    dead.released.set()


async def migrate(env: Any, fake: FakeCluster, dead: DeadAfter,
                  replacements: list[Callable[..., Any]]) -> tuple[Any, Progress]:
    """One migration, workflows unsandboxed on a queue of their own (with rendering the chart,
    which names no cluster), the cluster's steps on the product's worker with ``replacements``
    in place of the fakes of the same name."""
    suffix = uuid.uuid4().hex[:8]
    name, central = f"beats-{suffix}", f"central-{suffix}"
    own_queue = f"cilium-migrate.{name}"
    migration = spec(name, cluster={"name": name, "taskQueue": own_queue},
                     approvals={"policy": "none"})
    replaced = {step.__name__ for step in replacements}
    activities = [s for s in fake.activities() if s.__name__ not in replaced] + replacements
    rendering = [s for s in fake.activities() if s.__name__ == "render_chart"]
    silenced = client.Client(**{**env.client.config(), "interceptors": [dead]})
    async with Worker(env.client, task_queue=central, workflows=list(WORKFLOWS),
                      activities=rendering, workflow_runner=UnsandboxedWorkflowRunner()), \
            build_worker(silenced, activities, task_queue=own_queue):
        handle = await start(env, fake, migration, central)
        # A bound, not a figure: without heartbeats the dead step waits out its start-to-close
        # timeout (5.5 min for flannel removal), and the test should fail rather than hang.
        try:
            report = await asyncio.wait_for(handle.result(), timeout=120)
        except TimeoutError:
            raise AssertionError(f"{name} did not end: a step waits for a worker that died, "
                                 f"or is retried over and over") from None
    return handle, report


async def test_a_short_step_whose_worker_died_is_retried_after_a_heartbeat_timeout(
        temporal_env: Any, dead: DeadAfter) -> None:
    """Flannel removal never heartbeats itself; its worker dies after the deletion, before the
    result reached Temporal (the crash matrix's hardest point)."""
    fake = FakeCluster(workers=1)
    removals: list[int] = []

    @activity.defn(name=Activity.REMOVE_FLANNEL)
    async def remove_flannel(input: RemoveFlannelInput) -> RemoveFlannelResult:
        removals.append(activity.info().attempt)
        if activity.info().attempt == 1:
            dead.die()
            await asyncio.Event().wait()  # until the worker stops
        return RemoveFlannelResult(deleted=["kube-flannel/kube-flannel-ds"])

    handle, report = await migrate(temporal_env, fake, dead, [remove_flannel])

    assert report.phase is Phase.COMPLETED
    assert removals == [1, 2]
    history = await handle.fetch_history()
    assert attempts(history, Activity.REMOVE_FLANNEL) == [(2, TimeoutType.TIMEOUT_TYPE_HEARTBEAT)]


async def test_a_slow_short_step_on_a_live_worker_is_not_presumed_dead(
        temporal_env: Any, dead: DeadAfter) -> None:
    """A synchronous step (as the real ones are) that neither heartbeats nor returns for two
    heartbeat timeouts, a slow API call, say: the worker's background heartbeats keep it."""
    fake = FakeCluster(workers=1)
    runs: list[tuple[int, timedelta | None]] = []

    @activity.defn(name=Activity.APPLY_NODE_CONFIG)
    def apply_config(input: NodeConfigInput) -> None:
        runs.append((activity.info().attempt, activity.info().heartbeat_timeout))
        if activity.info().attempt == 1:  # a retry would be quick: the test fails, not hangs
            time.sleep(2 * TEST_HEARTBEAT.total_seconds())

    handle, report = await migrate(temporal_env, fake, dead, [apply_config])

    assert report.phase is Phase.COMPLETED
    assert runs == [(1, TEST_HEARTBEAT)]  # a short step, with a heartbeat timeout all the same
    history = await handle.fetch_history()
    assert attempts(history, Activity.APPLY_NODE_CONFIG) == [(1, None)]


async def test_a_long_steps_retry_resumes_from_its_own_details_after_background_heartbeats(
        temporal_env: Any, dead: DeadAfter) -> None:
    """The drain heartbeats what it evicted, then goes quiet for two heartbeat timeouts (a
    long watch window) while the worker heartbeats for it, then its worker dies; so does the
    next attempt's, before the drain heartbeated anything new. Each next attempt reads the
    first one's details, not the nothing a background heartbeat would carry."""
    fake = FakeCluster(workers=1)
    evicted = {"evicted": ["t/web-worker-1"]}
    log: list[tuple[str, int, list[Any]]] = []  # worker-1's drain, in order

    @activity.defn(name=Activity.DRAIN_NODE)
    def drain(input: DrainInput) -> DrainResult:
        info = activity.info()
        if input.target.node != "worker-1":
            return DrainResult()
        log.append(("started", info.attempt, list(info.heartbeat_details)))
        if info.attempt <= 2:
            if info.attempt == 1:
                activity.heartbeat(evicted)
            time.sleep(2 * TEST_HEARTBEAT.total_seconds())
            log.append(("died", info.attempt, []))
            dead.die()
            hang(dead)
        return DrainResult(evicted=evicted["evicted"])

    handle, report = await migrate(temporal_env, fake, dead, [drain])

    assert report.phase is Phase.COMPLETED
    # Each attempt lived while it was quiet; the next came once it died, and resumed.
    assert log == [("started", 1, []), ("died", 1, []),
                   ("started", 2, [evicted]), ("died", 2, []),
                   ("started", 3, [evicted])]
    node = temporal_env.client.get_workflow_handle(node_workflow_id(handle.id, "worker-1"))
    assert attempts(await node.fetch_history(), Activity.DRAIN_NODE) == [
        (3, TimeoutType.TIMEOUT_TYPE_HEARTBEAT)]
