"""`Followed`: a collection from one streaming list where the server serves them (its window
read on by the waits, so one watch does what a list and a watch did), from a list where it
refuses them, and from a list again when a window ends before its initial events did."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from kubernetes.client.rest import ApiException

from activities.kubeapi import INITIAL_EVENTS_END, Kube, Obj

PODS = "/api/v1/namespaces/apps/pods"


def pod(name: str, version: str, ready: bool = False) -> Obj:
    return {"metadata": {"name": name, "namespace": "apps", "resourceVersion": version},
            "status": {"ready": ready}}


def bookmark(version: str, end: bool = False) -> Obj:
    annotations = {INITIAL_EVENTS_END: "true"} if end else {}
    return {"metadata": {"resourceVersion": version, "annotations": annotations}}


class ScriptedKube(Kube):
    """Answers watches with scripted windows and lists with ``listing``; records what was
    asked, as ("list"|"watch"|"streaming list", resourceVersion)."""

    def __init__(self, windows: list[list[tuple[str, Obj]] | ApiException],
                 listing: list[Obj] | None = None) -> None:
        # No super().__init__(): no credentials, no server.
        self.streaming_lists = None
        self.windows = windows
        self.listing = listing or []
        self.asked: list[tuple[str, str]] = []
        self.closed = 0

    def get(self, path: str, **query: Any) -> Any:
        self.asked.append(("list", ""))
        return {"items": self.listing, "metadata": {"resourceVersion": "100"}}

    def _stream(self, path: str, resource_version: str, query: dict[str, Any],
                timeout_seconds: int = 300, *, initial_events: bool = False
                ) -> Generator[tuple[str, Obj], None, None]:
        self.asked.append(("streaming list" if initial_events else "watch", resource_version))
        window = self.windows.pop(0)
        try:
            if isinstance(window, ApiException):
                raise window
            yield from window
        finally:
            self.closed += 1


def ready(pods: list[Obj]) -> Obj | None:
    return next((p for p in pods if p["status"]["ready"]), None)


def test_a_streaming_list_is_the_first_window_of_the_waits() -> None:
    kube = ScriptedKube([[("ADDED", pod("a", "5")), ("ADDED", pod("b", "6")),
                          ("BOOKMARK", bookmark("7", end=True)),
                          ("MODIFIED", pod("a", "8", ready=True))]])
    followed = kube.follow(PODS)
    assert sorted(p["metadata"]["name"] for p in followed.objects) == ["a", "b"]
    found = followed.wait(ready, timeout=10)
    assert found is not None and found["metadata"]["name"] == "a"
    assert kube.asked == [("streaming list", "")]  # no list, no second window
    assert kube.streaming_lists is True


def test_the_next_wait_reads_on_in_the_window_the_last_one_left_open() -> None:
    kube = ScriptedKube([[("BOOKMARK", bookmark("7", end=True)),
                          ("ADDED", pod("a", "8", ready=True)),
                          ("DELETED", pod("a", "9", ready=True))]])
    followed = kube.follow(PODS)
    assert followed.wait(ready, timeout=10) is not None
    assert followed.wait(lambda pods: not pods, timeout=10)
    assert kube.asked == [("streaming list", "")]
    followed.close()
    assert kube.closed == 1


def test_a_server_without_streaming_lists_is_listed_from_then_on() -> None:
    refused = ApiException(status=422, reason="Unprocessable Entity")
    kube = ScriptedKube([refused, [("MODIFIED", pod("a", "101", ready=True))]],
                        listing=[pod("a", "99")])
    followed = kube.follow(PODS)
    assert [p["metadata"]["name"] for p in followed.objects] == ["a"]
    assert followed.wait(ready, timeout=10) is not None
    kube.follow(PODS)
    assert kube.asked == [("streaming list", ""), ("list", ""), ("watch", "100"), ("list", "")]
    assert kube.streaming_lists is False


def test_a_window_that_ends_before_its_initial_events_did_is_followed_by_a_list() -> None:
    kube = ScriptedKube([[("ADDED", pod("a", "5"))]], listing=[pod("a", "99"), pod("b", "98")])
    followed = kube.follow(PODS)
    assert len(followed.objects) == 2
    assert kube.asked == [("streaming list", ""), ("list", "")]
    assert kube.streaming_lists is None  # nothing learnt about the server


def test_once_served_a_refusal_is_an_error() -> None:
    kube = ScriptedKube([ApiException(status=422, reason="Unprocessable Entity")])
    kube.streaming_lists = True
    try:
        kube.follow(PODS)
    except ApiException as error:
        assert error.status == 422
    else:
        raise AssertionError("the refusal was taken for a server without streaming lists")
