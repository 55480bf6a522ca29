"""A worker that kills itself (SIGKILL) once, inside one chosen step, as a crash would:
`crash_worker.py ADDRESS QUEUE CLUSTER KUBECONFIG HELM STEP OCCURRENCE DELAY`.

It runs the real activities. When the OCCURRENCE-th execution of activity STEP has run for DELAY
seconds, or has finished its work before that and not yet reported its result, the process dies
with everything the step had done so far left as it is. DELAY `end` means: at the end only, after
the step's side effects and before Temporal hears of them, the hardest point for a retry.
A test-only harness: the product's own worker has no such hook.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from temporalio import activity, client  # noqa: E402
from temporalio import worker as temporal_worker  # noqa: E402

from activities.context import ActivityContext  # noqa: E402
from activities.registry import activities  # noqa: E402
from worker.build import build_worker, connect  # noqa: E402


class _CrashInside(temporal_worker.ActivityInboundInterceptor):
    def __init__(self, next: temporal_worker.ActivityInboundInterceptor, plan: CrashPlan) -> None:
        super().__init__(next)
        self.plan = plan

    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        if not self.plan.hit(activity.info().activity_type):
            return await super().execute_activity(input)
        step = asyncio.ensure_future(super().execute_activity(input))
        await asyncio.wait({step}, timeout=self.plan.delay)
        print(f"crashing inside {self.plan.step} ({'done' if step.done() else 'running'})",
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return await step  # not reached


class CrashPlan(client.Interceptor, temporal_worker.Interceptor):
    """Where to crash: a client interceptor that is a worker one too, so `connect` hands it to
    the worker (as it does the tracing interceptor)."""

    def __init__(self, step: str, occurrence: int, delay: float | None) -> None:
        self.step, self.occurrence, self.delay = step, occurrence, delay
        self.seen = 0

    def hit(self, activity_type: str) -> bool:
        if activity_type != self.step:
            return False
        self.seen += 1
        return self.seen == self.occurrence

    def intercept_activity(self, next: temporal_worker.ActivityInboundInterceptor
                           ) -> temporal_worker.ActivityInboundInterceptor:
        return _CrashInside(next, self)


async def main(address: str, task_queue: str, cluster: str, kubeconfig: str, helm: str,
               step: str, occurrence: str, delay: str) -> None:
    plan = CrashPlan(step, int(occurrence), None if delay == "end" else float(delay))
    temporal = await connect(address, interceptors=[plan])
    context = ActivityContext(kubeconfigs={cluster: kubeconfig}, helm=helm)
    async with build_worker(temporal, activities(context), task_queue=task_queue):
        print("worker running", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:9]))
