"""Kubernetes API access as plain JSON dicts over the official `kubernetes` client.

Used by the activities and by the sandbox's node simulator. It skips the client's model
deserialisation (the costly part with hundreds of objects) and works on the JSON the server
sends, addressed by REST paths. Watches resume from the last resourceVersion and fall back to a
fresh list when the server says it is too old. A followed collection starts from a streaming
list where the server serves them, so one watch does what a list and a watch did.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# A wait's watch is cut into windows this long: the server closes each, and the caller's
# `on_tick` (its heartbeat) runs between them.
WATCH_WINDOW_SECONDS = 5.0
# The annotation of the bookmark that ends a streaming list's initial events (KEP-3157).
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# A streaming list's window: short, so that a step's first wait, however short (a reboot re-reads
# its witness every 2 s), reads on in it rather than opening one of its own.
STREAMING_LIST_WINDOW_SECONDS = 2
# Connections kept open to one API server. The client's default (5 per core) is far fewer than
# the worker's activities at once, each holding one while it watches; past it, every request
# and watch window opened a new TLS connection and threw it away after.
CONNECTIONS = 256
# How much longer than a wait's own window an open window may run before the wait would rather
# open its own: the server counts timeoutSeconds in whole seconds.
WINDOW_SLACK_SECONDS = 1.0


class Kube:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 in_cluster: bool = False) -> None:
        """Credentials from a kubeconfig file (``None``: $KUBECONFIG or ~/.kube/config) and
        context, or from the pod's service account when ``in_cluster``."""
        configuration = client.Configuration()
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration)
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize,
                                                     CONNECTIONS)
        self.api = client.ApiClient(configuration)
        # Whether the server serves streaming lists (a watch that starts with the current
        # state: the WatchList feature, on by default in 1.32 and again from 1.34); None until
        # a follow has asked. Refused once, a collection is listed from then on.
        self.streaming_lists: bool | None = None

    @property
    def server(self) -> str:
        """The API server's URL, as this client reaches it."""
        return str(self.api.configuration.host)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str | None = None,
                timeout: float | tuple[float, float] = 30.0,
                accept: str = "application/json") -> Any:
        """One request; returns the decoded JSON body, raises ApiException on an error status."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        method, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = data.decode(errors="replace") if isinstance(data, bytes) else data
            raise error
        return json.loads(data) if data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def list_metadata(self, path: str, **query: Any) -> list[Obj]:
        """A collection's objects without their contents (kind, metadata): the server answers
        a PartialObjectMetadataList, so large objects (Helm's release Secrets) are not sent."""
        items: list[Obj] = self.request("GET", path, query=query or None,
                                        accept=METADATA_LIST)["items"] or []
        return items

    def pages(self, path: str, limit: int, **query: Any) -> Iterator[list[Obj]]:
        """A collection ``limit`` objects at a time (the server's `continue` token), in the
        server's order (by namespace and name): a caller that finds what it wants early reads
        no further."""
        token: str | None = None
        while True:
            page = self.get(path, limit=limit, **({"continue": token} if token else {}),
                            **query)
            yield page["items"]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def get_or_none(self, path: str) -> Obj | None:
        try:
            result: Obj = self.get(path)
            return result
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj | None:
        """Creates; an AlreadyExists answer counts as done (the caller ensures, not inserts)."""
        try:
            result: Obj = self.request("POST", path, body)
            return result
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    def patch(self, path: str, body: Obj, content_type: str = STRATEGIC) -> Obj | None:
        try:
            result: Obj = self.request("PATCH", path, body, content_type=content_type)
            return result
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete(self, path: str, body: Obj | None = None) -> None:
        try:
            self.request("DELETE", path, body)
        except ApiException as error:
            if error.status not in (404, 409):  # gone already, or a recreated object (uid)
                raise

    def watch(self, path: str, on_event: Callable[[str, Obj], None],
              stopped: Callable[[], bool], **query: Any) -> None:
        """Lists ``path`` then follows its changes until ``stopped()``; never returns early.

        Every object of the initial list is delivered as an ADDED event, so a restarted
        simulator rebuilds its state from the cluster.
        """
        resource_version = ""
        while not stopped():
            try:
                if not resource_version:
                    listing = self.get(path, **query)
                    for item in listing.get("items", []):
                        on_event("ADDED", item)
                    resource_version = listing["metadata"]["resourceVersion"]
                for kind, obj in self._stream(path, resource_version, query):
                    if kind == "ERROR":
                        resource_version = ""  # expired: list again
                        break
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        on_event(kind, obj)
                    if stopped():
                        return
            except Exception as error:  # noqa: BLE001 - a watch must outlive server restarts
                if stopped():
                    return
                log.warning("watch %s failed (%s); retrying", path, error)
                if isinstance(error, ApiException) and error.status == 410:
                    resource_version = ""
                time.sleep(1.0)

    def follow(self, path: str, query: dict[str, Any] | None = None, *,
               objects: list[Obj] | None = None, resource_version: str = "") -> Followed:
        """The collection at ``path`` (narrowed by ``query``: label and field selectors), listed
        once and then kept current by watching it. With ``objects`` and their
        ``resource_version`` (an object just created, say) it starts from those instead of
        listing."""
        return Followed(self, path, query or {}, objects, resource_version)

    def wait(self, path: str, condition: Callable[[list[Obj]], T | None], timeout: float,
             on_tick: Callable[[], None] | None = None, **query: Any) -> T | None:
        """Follows the collection at ``path`` (narrowed by label or field selectors in
        ``query``) until ``condition`` holds for its current objects: `Followed.wait` on a
        fresh `follow`."""
        return self.follow(path, query).wait(condition, timeout, on_tick)

    def _stream(self, path: str, resource_version: str, query: dict[str, Any],
                timeout_seconds: int = 300, *, initial_events: bool = False
                ) -> Generator[tuple[str, Obj], None, None]:
        """The watch events of ``path`` from ``resource_version``; with ``initial_events`` (and
        no resource version) a streaming list: the current objects as ADDED events first, then
        a bookmark annotated INITIAL_EVENTS_END, then the changes."""
        params: dict[str, Any] = {**query, "watch": "true", "allowWatchBookmarks": "true",
                                  "timeoutSeconds": timeout_seconds}
        if initial_events:
            # No resourceVersion with NotOlderThan: the state is at least as new as this
            # request, as a list's would be.
            params.update(sendInitialEvents="true", resourceVersionMatch="NotOlderThan")
        else:
            params["resourceVersion"] = resource_version
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET", resource_path=path, query_params=list(params.items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = self.api.rest_client.request(method, url, headers=headers,
                                                _request_timeout=(10, timeout_seconds + 30))
        try:
            if response.status != 200:
                error = ApiException(status=response.status, reason=response.reason)
                data = response.read()  # the Status saying why, for the caller to read
                error.body = data.decode(errors="replace") if isinstance(data, bytes) else data
                raise error
            for line in iter_resp_lines(response.response):
                event = json.loads(line)
                yield event["type"], event["object"]
        finally:
            response.response.release_conn()


class Followed:
    """One collection as the server has it, from one list and then a watch: an activity that
    waits on the same collection several times (a drain's rounds, a reboot's stages) lists it
    once, and each wait resumes the watch where the last one stopped. A resourceVersion that
    expired in between makes it list again.

    Where the server serves streaming lists, the list is the start of the first watch window
    (its initial events), and the waits read on in that window: one watch request does what a
    list and a watch did, the objects coming from the API server's watch cache. A window a
    wait leaves open (its condition held mid-window) is read on by the next wait."""

    def __init__(self, kube: Kube, path: str, query: dict[str, Any],
                 objects: list[Obj] | None = None, resource_version: str = "") -> None:
        self.kube, self.path, self.query = kube, path, query
        self._objects: dict[str, Obj] = {}
        self._resource_version = ""
        # The watch window being read, if one is open, and when the server closes it.
        self._window: Generator[tuple[str, Obj], None, None] | None = None
        self._window_ends = 0.0
        if objects is not None and resource_version:
            self._objects = {object_key(o): o for o in objects}
            self._resource_version = resource_version
        else:
            self._list()

    @property
    def objects(self) -> list[Obj]:
        """The collection's objects as last seen."""
        return list(self._objects.values())

    def close(self) -> None:
        """Ends the open watch window, if any (dropping the object does too)."""
        if self._window is not None:
            self._window.close()  # hands the connection back to the pool
            self._window = None

    def _list(self) -> None:
        self.close()
        if self.kube.streaming_lists is not False and self._stream_list():
            return
        listing = self.kube.get(self.path, **self.query)
        self._objects = {object_key(o): o for o in listing.get("items", [])}
        self._resource_version = listing["metadata"]["resourceVersion"]

    def _stream_list(self) -> bool:
        """The collection's objects from a streaming list, its window left open for the waits;
        False when it was not to be had: the server refused the query (no WatchList feature,
        as in 1.33 by default or before 1.27), or closed the window before the end of its
        initial events (a collection too large for STREAMING_LIST_WINDOW_SECONDS)."""
        opened = time.monotonic()
        events = self.kube._stream(self.path, "", self.query, STREAMING_LIST_WINDOW_SECONDS,
                                   initial_events=True)
        objects: dict[str, Obj] = {}
        try:
            for kind, obj in events:
                meta = obj.get("metadata") or {}
                if kind == "BOOKMARK":
                    if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                        self._objects, self._resource_version = objects, meta["resourceVersion"]
                        self._window = events
                        self._window_ends = opened + STREAMING_LIST_WINDOW_SECONDS
                        self.kube.streaming_lists = True
                        return True
                elif kind == "ERROR":
                    break
                elif kind == "DELETED":
                    objects.pop(object_key(obj), None)
                else:
                    objects[object_key(obj)] = obj
        except ApiException as error:
            # Only the first refusal says the server has no streaming lists; once it served
            # one, a refusal is an error like any other.
            if error.status not in (400, 422) or self.kube.streaming_lists:
                raise
            log.info("the API server serves no streaming lists (%s %s); listing instead",
                     error.status, error.reason)
            self.kube.streaming_lists = False
        events.close()
        return False

    def _window_until(self, end: float) -> Generator[tuple[str, Obj], None, None]:
        """The open window if the server closes it by ``end`` (in whole seconds), else a new
        one from the last resourceVersion that closes then."""
        if self._window is not None and self._window_ends <= end + WINDOW_SLACK_SECONDS:
            return self._window
        self.close()
        seconds = max(1, math.ceil(end - time.monotonic()))
        self._window = self.kube._stream(self.path, self._resource_version, self.query, seconds)
        self._window_ends = time.monotonic() + seconds
        return self._window

    def wait(self, condition: Callable[[list[Obj]], T | None], timeout: float,
             on_tick: Callable[[], None] | None = None) -> T | None:
        """Returns the first truthy value of ``condition(objects)``, checked on the objects as
        they are now and after every change, or None once ``timeout`` seconds have passed.
        ``on_tick`` runs before each watch window: that is where activities heartbeat."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._resource_version:
                self._list()
            if result := condition(self.objects):
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if on_tick is not None:
                on_tick()
            events = self._window_until(time.monotonic() + min(remaining, WATCH_WINDOW_SECONDS))
            try:
                for kind, obj in events:
                    if kind == "ERROR":  # our resourceVersion expired: list again
                        self._resource_version = ""
                        break
                    self._resource_version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self._objects.pop(object_key(obj), None)
                    else:
                        self._objects[object_key(obj)] = obj
                    if result := condition(self.objects):
                        return result  # the window stays open for the next wait
            except ApiException as error:
                self.close()
                if error.status != 410:
                    raise
                self._resource_version = ""
            except BaseException:
                self.close()
                raise
            else:  # the server closed the window, or our resourceVersion expired
                self.close()


# ---- reading objects ----------------------------------------------------------------------------

def object_key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def condition_true(obj: Obj, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def condition_since(obj: Obj, kind: str) -> datetime | None:
    """When the ``kind`` condition last changed (its lastTransitionTime), if it says."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and (stamp := condition.get("lastTransitionTime")):
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return None


def is_terminating(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def boot_id(node: Obj) -> str:
    """The node's bootID: it changes with every boot, so a reboot is told by it."""
    return str(node.get("status", {}).get("nodeInfo", {}).get("bootID", ""))


def unschedulable(node: Obj) -> bool:
    """Cordoned: no new pods are scheduled there."""
    return bool(node.get("spec", {}).get("unschedulable"))


def pod_ready(pod: Obj) -> bool:
    return not is_terminating(pod) and condition_true(pod, "Ready")


def pod_finished(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference marked as controller (a ReplicaSet, DaemonSet, Job...), if any."""
    return next((ref for ref in obj["metadata"].get("ownerReferences") or []
                 if ref.get("controller")), None)


def created_at(obj: Obj) -> datetime:
    stamp = obj["metadata"]["creationTimestamp"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a set of labels; an empty
    selector selects everything, a missing one nothing (as PodDisruptionBudgets read them)."""
    if selector is None:
        return False
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for requirement in selector.get("matchExpressions") or []:
        key, values = requirement["key"], requirement.get("values") or []
        present = key in labels
        allowed = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(requirement["operator"], False)
        if not allowed:
            return False
    return True
