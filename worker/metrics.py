"""Worker metrics: one Temporal `Runtime` per process, exporting the SDK's metrics (task
latencies, slots, poll outcomes, activity failures) for Prometheus to scrape."""

from __future__ import annotations

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig


def prometheus_runtime(bind_address: str) -> Runtime:
    """A runtime serving ``http://<bind_address>/metrics``; pass it to every client the
    process connects, so all workers in it report through one endpoint."""
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=bind_address, durations_as_seconds=True)))
