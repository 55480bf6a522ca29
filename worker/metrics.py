"""Telemetry: one Temporal `Runtime` per process, exporting the SDK's metrics (task
latencies, slots, poll outcomes, activity failures) and ours (the `cilium_migrate_*` metrics
recorded through the SDK's metric meter) for Prometheus to scrape; and traces, sent to an
OTLP endpoint when one is configured."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME = "cilium-migrate"


def prometheus_runtime(bind_address: str) -> Runtime:
    """A runtime serving ``http://<bind_address>/metrics``; pass it to every client the
    process connects, so all workers in it report through one endpoint."""
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=bind_address, durations_as_seconds=True)))


def start_tracing() -> Callable[[], None]:
    """Sends this process's spans to ``$OTEL_EXPORTER_OTLP_ENDPOINT`` when it is set (the
    standard OTEL_* variables configure the exporter); returns what flushes them, to call
    before the process exits. Without an endpoint, spans stay in-process (no-op tracer)."""
    if not os.environ.get(OTLP_ENDPOINT_ENV):
        return _nothing
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        print(f"warning: {OTLP_ENDPOINT_ENV} is set but opentelemetry-exporter-otlp is not "
              "installed; traces are not exported", file=sys.stderr)
        return _nothing
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _nothing() -> None:
    pass
