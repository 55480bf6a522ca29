"""Every activity heartbeats while it runs, so a worker that dies is noticed within one heartbeat
timeout whatever the step. Without this, a step that never heartbeats itself (cordon, label,
uncordon, flannel removal...) whose worker died was retried only at its start-to-close
timeout: 90 s, five and a half minutes for flannel removal.

`BackgroundHeartbeats` runs beside each activity that has a heartbeat timeout and, whenever the
activity has not heartbeated for a third of that timeout, heartbeats on its behalf: two missed
beats are tolerated before Temporal gives up on the worker. The SDK throttles what reaches the
server (at most one heartbeat per 0.8 x the timeout), and a step shorter than a third of its
timeout sends none at all.

Temporal keeps only the last heartbeat's details, overwriting them even with nothing, and a
long step's details are what its next attempt resumes from (`activities.context.resumed`). So
a background heartbeat repeats the latest details the activity sent, or, before it sent any,
those the previous attempt left: never nothing in their place.

The activities are synchronous (threads); the SDK carries each of their heartbeat calls to the
worker's event loop before the outbound interceptors see it, so the bookkeeping here runs on the
loop only, as does the background task, for async activities too.

A heartbeat's answer is also how a cancellation reaches a running activity: steps that never
heartbeated now hear of one. The workflows do not wait for short steps' cancellations
(`workflows.steps.run_step`), as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import worker

# Background heartbeats per heartbeat timeout, at most.
BEATS_PER_TIMEOUT = 3


class BackgroundHeartbeats(worker.Interceptor):
    """A worker interceptor: `worker.build` gives it to every worker."""

    def intercept_activity(self, next: worker.ActivityInboundInterceptor
                           ) -> worker.ActivityInboundInterceptor:
        return _HeartbeatingActivity(next)


class _HeartbeatingActivity(worker.ActivityInboundInterceptor):
    def init(self, outbound: worker.ActivityOutboundInterceptor) -> None:
        self._last = _LastHeartbeat(outbound)
        super().init(self._last)

    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        timeout = self._last.info().heartbeat_timeout
        if not timeout:  # scheduled before every step had one: nobody would listen
            return await super().execute_activity(input)
        beating = asyncio.create_task(self._last.keep_alive(timeout / BEATS_PER_TIMEOUT))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()


class _LastHeartbeat(worker.ActivityOutboundInterceptor):
    """Passes the activity's heartbeats on, remembering the latest details and when."""

    def __init__(self, next: worker.ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.details: Sequence[Any] = tuple(next.info().heartbeat_details)
        self.at = time.monotonic()  # the server's heartbeat clock starts with the attempt

    def heartbeat(self, *details: Any) -> None:
        self.details, self.at = details, time.monotonic()
        super().heartbeat(*details)

    async def keep_alive(self, interval: timedelta) -> None:
        """Heartbeats the latest details again whenever ``interval`` passed without one."""
        seconds = interval.total_seconds()
        while True:
            await asyncio.sleep(max(0.0, self.at + seconds - time.monotonic()))
            if time.monotonic() - self.at >= seconds:
                self.heartbeat(*self.details)
