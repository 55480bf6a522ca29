"""The simulator's write lanes: a write the API server turns away for now is sent again, in
order, as a kubelet's status manager would; a write that cannot succeed is dropped."""

from __future__ import annotations

import threading

from kubernetes.client.rest import ApiException

from sandbox.simulator.lanes import Lanes, transient


def test_throttled_writes_are_sent_again_before_the_lanes_later_writes() -> None:
    lanes = Lanes(threads=2)
    sent: list[str] = []
    refusals = {"status": 2}  # the API server throttles the first two attempts
    done = threading.Event()

    def write(what: str) -> None:
        if refusals.get(what):
            refusals[what] -= 1
            raise ApiException(status=429, reason="Too Many Requests")
        sent.append(what)
        if what == "last":
            done.set()

    for what in ("status", "gone", "last"):
        lanes.submit("worker-1", write if what != "gone" else _gone, what)
    assert done.wait(timeout=30)
    assert sent == ["status", "last"]  # in order; the 404 was dropped, not retried forever


def _gone(what: str) -> None:
    raise ApiException(status=404, reason="Not Found")


def test_only_throttling_server_trouble_and_lost_connections_are_transient() -> None:
    assert transient(ApiException(status=429)) and transient(ApiException(status=503))
    assert transient(ConnectionResetError()) and transient(TimeoutError())
    assert not transient(ApiException(status=404)) and not transient(ApiException(status=409))
    assert not transient(ValueError("a bug"))
