"""An Event that cannot be written never fails the step that records it."""

from __future__ import annotations

from typing import Any

import pytest

from activities.context import record_node_event
from tests.fake_kube import FakeKube, api_error


class RefusingKube(FakeKube):
    """A cluster whose API server refuses every write."""

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str | None = None,
                timeout: float | tuple[float, float] = 30.0) -> Any:
        if method != "GET":
            self.requests.append((method, path, body))
            raise api_error(403, "forbidden", "Forbidden")
        return super().request(method, path, body, query, content_type, timeout)


def test_an_event_that_cannot_be_written_only_logs_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    kube = RefusingKube()
    record_node_event(kube, "worker-1", "CiliumMigrateDrainBlocked", "x" * 2000,
                      type="Warning")
    [(path, event)] = kube.asked("POST")
    assert path == "/api/v1/namespaces/default/events"
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "worker-1",
                                       "uid": "worker-1"}
    assert event["type"] == "Warning" and event["action"] == "DrainBlocked"
    assert len(event["message"].encode()) <= 1024
    assert "could not record event CiliumMigrateDrainBlocked" in caplog.text
