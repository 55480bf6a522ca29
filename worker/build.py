"""Builds the Temporal client and worker: one place for the converter, task queue and executor.

Feature code declares workflows and activities; everything about how they are hosted lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from worker.heartbeats import BackgroundHeartbeats
from workflows.cluster import ClusterMigrationWorkflow
from workflows.fleet import FleetMigrationWorkflow
from workflows.node import NodeMigrationWorkflow
from workflows.wave import WaveMigrationWorkflow

TASK_QUEUE = "cilium-migrate"
# Activities at once. Every node of a running wave holds one slot for the whole of each step
# (mostly waiting on a watch), besides the connectivity monitor and the cluster's own steps, in
# every migration the worker serves at once. With fewer slots than that, a wave runs in rounds
# and nothing says so: a 1,000-node bench with waves of 50 on 32 slots had agent restarts of
# 20-40 s that take 1.5 s. Idle threads cost little, so the default covers waves of 250.
MAX_CONCURRENT_ACTIVITIES = 256
WORKFLOWS: tuple[type, ...] = (ClusterMigrationWorkflow, WaveMigrationWorkflow,
                               NodeMigrationWorkflow, FleetMigrationWorkflow)
# The SDK's longest wait between two heartbeat calls to the server (it sends at most one per
# 0.8 x the step's heartbeat timeout otherwise). A cancellation reaches a running activity only
# in a heartbeat's answer, so this bounds how long a cancelled watcher takes to hear of it;
# each heartbeat sent is a server call (a billed action on Temporal Cloud). Module attribute:
# the tests, whose fake steps live for moments, shorten it.
MAX_HEARTBEAT_THROTTLE = timedelta(seconds=60)


async def connect(address: str, namespace: str = "default", **options: Any) -> Client:
    """Every client traces: starting, signalling or updating a workflow carries the caller's
    span (the CLI's root span) to the workflow and its activities."""
    interceptors = [*options.pop("interceptors", ()), TracingInterceptor()]
    return await Client.connect(address, namespace=namespace, interceptors=interceptors,
                                data_converter=pydantic_data_converter, **options)


def build_worker(client: Client, activities: Sequence[Callable[..., Any]],
                 task_queue: str = TASK_QUEUE,
                 max_concurrent_activities: int = MAX_CONCURRENT_ACTIVITIES) -> Worker:
    """Activities are synchronous (the Kubernetes client blocks), so they run on a thread pool
    at least as large as the number of activities allowed at once.

    A client from `connect` already brings its tracing interceptor to the worker (the SDK
    passes client interceptors that are worker interceptors too); any other client gets one
    here, so workflows and activities are traced either way. Every activity heartbeats in the
    background while it runs (`worker.heartbeats`), so a dead worker is noticed within one
    heartbeat timeout whatever the step."""
    traced = any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])
    return Worker(
        client, task_queue=task_queue, workflows=list(WORKFLOWS), activities=list(activities),
        activity_executor=ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        max_heartbeat_throttle_interval=MAX_HEARTBEAT_THROTTLE,
        interceptors=[*([] if traced else [TracingInterceptor()]), BackgroundHeartbeats()],
    )
