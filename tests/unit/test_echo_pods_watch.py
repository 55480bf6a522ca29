"""`EchoPods`: the connectivity monitor's echo pods, listed once and then kept current by a
watch on a thread of its own; a watch that fails for good leaves each round to list them."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Generator
from typing import Any

from kubernetes.client.rest import ApiException

from activities.connectivity import EchoPods
from activities.kubeapi import Kube, Obj

NS = "cilium-migrate-echo"
# Guards against a thread that never delivers; a working one does within milliseconds.
DEADLINE_SECONDS = 20.0


def echo(name: str, version: str) -> Obj:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": version},
            "status": {"podIP": "10.244.0.5"}}


class WatchedKube(Kube):
    """A server that refuses streaming lists, lists ``echo-a`` and then sends on its watches
    whatever the test puts in ``events`` (an exception ends the watch with it)."""

    def __init__(self) -> None:
        # No super().__init__(): no credentials, no server.
        self.streaming_lists = None
        self.events: queue.Queue[tuple[str, Obj] | Exception] = queue.Queue()
        self.lists: list[dict[str, Any]] = []

    def get(self, path: str, **query: Any) -> Any:
        self.lists.append({"path": path, **query})
        return {"items": [echo("echo-a", "1")], "metadata": {"resourceVersion": "1"}}

    def _stream(self, path: str, resource_version: str, query: dict[str, Any],
                timeout_seconds: int = 300, *, initial_events: bool = False
                ) -> Generator[tuple[str, Obj], None, None]:
        if initial_events:
            raise ApiException(status=422, reason="Unprocessable Entity")
        ends = time.monotonic() + timeout_seconds
        while time.monotonic() < ends:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            yield item


def eventually(check: Callable[[], bool], what: str) -> None:
    ends = time.monotonic() + DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < ends, f"never: {what}"
        time.sleep(0.01)


def names(pods: list[Obj]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)


def test_the_pods_are_listed_once_and_then_kept_current_by_the_watch() -> None:
    kube = WatchedKube()
    pods = EchoPods(kube, NS)
    try:
        assert names(pods.current()) == ["echo-a"]
        kube.events.put(("ADDED", echo("echo-b", "2")))
        kube.events.put(("DELETED", echo("echo-a", "3")))
        eventually(lambda: names(pods.current()) == ["echo-b"], "the watch's changes seen")
        assert [q["path"] for q in kube.lists] == [f"/api/v1/namespaces/{NS}/pods"]
    finally:
        pods.close()


def test_a_watch_that_fails_for_good_leaves_each_round_to_list_them() -> None:
    kube = WatchedKube()
    pods = EchoPods(kube, NS)
    try:
        kube.events.put(ApiException(status=500, reason="Internal Server Error"))

        def listed_by_the_round() -> bool:
            before = len(kube.lists)
            current = pods.current()
            return len(kube.lists) == before + 1 and names(current) == ["echo-a"]

        eventually(listed_by_the_round, "a round listing the pods itself")
        # From the API server's watch cache, as the rounds always listed them.
        assert kube.lists[-1]["resourceVersion"] == "0"
    finally:
        pods.close()
