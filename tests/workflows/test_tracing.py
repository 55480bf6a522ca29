"""Tracing: a CLI command is one root span, and the workflows it starts join its trace through
the client's tracing interceptor."""

from __future__ import annotations

import argparse
import importlib.util
import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from client import exit_codes, temporal_flags
from tests.fakes import FakeCluster
from tests.workflows.support import spec
from worker.build import build_worker, connect
from worker.metrics import OTLP_ENDPOINT_ENV, start_tracing
from workflows.cluster import ClusterMigrationWorkflow
from workflows.identity import cluster_workflow_id
from workflows.messages import MigrationInput
from workflows.progress import Phase


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Spans finished in this process; the global provider can be set only once per process."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_the_workflow_joins_the_callers_trace(temporal_env: Any,
                                                    spans: InMemorySpanExporter) -> None:
    client = await connect(temporal_env.client.service_client.config.target_host)
    task_queue = f"trace-{uuid.uuid4().hex[:8]}"
    fake = FakeCluster(workers=1)
    migration = spec(f"trace-{task_queue}", approvals={"policy": "none"})
    async with build_worker(client, fake.activities(), task_queue=task_queue):
        with trace.get_tracer(__name__).start_as_current_span("cilium-migrate start") as root:
            handle = await client.start_workflow(
                ClusterMigrationWorkflow.run, MigrationInput(spec=migration),
                id=cluster_workflow_id(migration.cluster.name), task_queue=task_queue)
        assert (await handle.result()).phase is Phase.COMPLETED

    trace_id = root.get_span_context().trace_id
    ours = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = {s.name for s in ours}
    assert "RunWorkflow:ClusterMigration" in names, names
    assert "StartChildWorkflow:NodeMigration" in names, names
    assert any(name.startswith("RunActivity:") for name in names), names


def test_each_cli_command_is_a_root_span(spans: InMemorySpanExporter) -> None:
    async def command() -> int:
        return exit_codes.OK

    args = argparse.Namespace(group="history", command="export")
    assert temporal_flags.run(args, command()) == exit_codes.OK
    roots = [s for s in spans.get_finished_spans() if s.name == "cilium-migrate history export"]
    assert len(roots) == 1 and roots[0].parent is None


def test_an_endpoint_without_the_exporter_package_only_warns(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("opentelemetry.exporter") is not None:
        pytest.skip("an OTLP exporter is installed here")
    monkeypatch.setenv(OTLP_ENDPOINT_ENV, "http://127.0.0.1:4317")
    start_tracing()()
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert "opentelemetry-exporter-otlp is not installed" in warning
