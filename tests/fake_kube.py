"""An in-memory stand-in for `activities.kubeapi.Kube`, for unit tests of the activities.

It answers the REST paths the activities use with JSON dicts, as the API server would: lists
narrowed by simple label and field selectors, creates that report AlreadyExists, deletes,
merge patches with a resourceVersion precondition, and evictions. Time passes only while an
activity waits: pods being deleted then go away (unless a test keeps them), and the test's
`while_waiting` hooks act as the rest of the cluster would (a kubelet finishing a pod, say).

It only subclasses `Kube` to stand where one is expected; it never reaches a server.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException

from activities.kubeapi import Kube, Obj
from plan.contract import ECHO_SELECTOR

T = TypeVar("T")
# Where an object lives: API prefix, resource, namespace ("" when cluster-scoped), name.
Key = tuple[str, str, str, str]
DELETION_STAMP = "2030-01-01T00:00:00Z"


def api_error(status: int, message: str = "", reason: str = "") -> ApiException:
    """An error answer with a Status body, as the API server sends it."""
    error = ApiException(status=status, reason=reason or f"HTTP {status}")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message,
                             "reason": reason, "code": status})
    return error


class FakeKube(Kube):
    def __init__(self, server: str = "https://10.0.0.1:6443") -> None:
        # No super().__init__(): there are no credentials to load and no server to reach.
        self._server = server
        self.objects: dict[Key, Obj] = {}
        self.requests: list[tuple[str, str, Any]] = []  # method, path, body: what was asked
        # An eviction of the pod ("namespace/name") answers with this error instead.
        self.eviction_errors: dict[str, ApiException] = {}
        self.kept_terminating: set[str] = set()  # pods ("namespace/name") that never go
        self.while_waiting: list[Callable[[FakeKube], None]] = []
        # What answers the API server's pod proxy (GET .../pods/NAME:PORT/proxy/PATH): called
        # with the pod ("namespace/name:port"), the path after proxy/ and the query; it returns
        # the pod's JSON answer or raises the ApiException the API server would. None: no proxy.
        self.pod_proxy: Callable[[str, str, dict[str, Any]], Any] | None = None
        self.waits = 0
        # The discovery documents, as a v1.35 server with a few groups answers them.
        self.discovery: dict[str, Obj] = {
            "/version": {"major": "1", "minor": "35", "gitVersion": "v1.35.4"},
            "/api": {"kind": "APIVersions", "versions": ["v1"]},
            "/apis": {"kind": "APIGroupList", "groups": [
                {"name": group, "versions": [{"groupVersion": f"{group}/{version}",
                                              "version": version}]}
                for group, version in (("apps", "v1"), ("policy", "v1"),
                                       ("networking.k8s.io", "v1"))]},
        }
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    @property
    def server(self) -> str:
        return self._server

    # ---- setting up ---------------------------------------------------------------------

    def add(self, collection: str, obj: Obj) -> Obj:
        """Stores ``obj`` in ``collection`` (a list path), filling in what the server would."""
        prefix, resource, namespace, _, _ = _parse(collection)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'object-')}{next(self._uids)}"
        if namespace:
            meta["namespace"] = namespace
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("creationTimestamp", "2030-01-01T00:00:00Z")
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(prefix, resource, namespace or "", meta["name"])] = obj
        return copy.deepcopy(obj)

    def pods(self) -> list[str]:
        """``namespace/name`` of every pod still there."""
        return sorted(f"{ns}/{name}" for (_, resource, ns, name) in self.objects
                      if resource == "pods")

    def events(self) -> list[tuple[str, str]]:
        """(reason, message) of the Events recorded, oldest first."""
        return [(o["reason"], o["message"]) for (_, resource, _, _), o in self.objects.items()
                if resource == "events"]

    def asked(self, method: str, suffix: str = "") -> list[tuple[str, Any]]:
        """(path, body) of the requests made with ``method`` to paths ending in ``suffix``."""
        return [(path, body) for m, path, body in self.requests
                if m == method and path.endswith(suffix)]

    # ---- the Kube interface ---------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str | None = None,
                timeout: float | tuple[float, float] = 30.0) -> Any:
        self.requests.append((method, path, copy.deepcopy(body)))
        if method == "GET" and path in self.discovery:
            return copy.deepcopy(self.discovery[path])
        prefix, resource, namespace, name, sub = _parse(path)
        if (method == "GET" and resource == "pods" and sub == "proxy"
                and self.pod_proxy is not None):
            rest = path.split("/proxy/", 1)[1] if "/proxy/" in path else ""
            return self.pod_proxy(f"{namespace}/{name}", rest, dict(query or {}))
        key = (prefix, resource, namespace or "", name or "")
        if method == "GET" and name is None:
            return self._page(self._list(path, query or {}), query or {})
        if method == "POST" and name is None:
            if (body.get("metadata") or {}).get("name") and (
                    (prefix, resource, namespace or "", body["metadata"]["name"]) in self.objects):
                raise api_error(409, "already exists", "AlreadyExists")
            if prefix == "/apis/apps/v1":
                # The server starts a workload's generation at 1; its controller has observed
                # none of it yet (no status.observedGeneration).
                body = {**body, "metadata": {**(body.get("metadata") or {}), "generation": 1}}
            return self.add(path, body)
        if key not in self.objects:
            raise api_error(404, f"{resource} {name} not found", "NotFound")
        obj = self.objects[key]
        if method == "GET":
            return copy.deepcopy(obj)
        if method == "POST" and sub == "eviction":
            self._evict(key, body)
            return {"kind": "Status", "status": "Success"}
        if method == "DELETE":
            self._delete(key, body)
            return {"kind": "Status", "status": "Success"}
        if method == "PATCH" and content_type == "application/json-patch+json":
            _json_patch(obj, body)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))
            return copy.deepcopy(obj)
        if method == "PATCH":
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                raise api_error(409, "the object has been modified", "Conflict")
            _merge(obj, body)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))
            return copy.deepcopy(obj)
        raise NotImplementedError(f"{method} {path}")

    def follow(self, path: str, query: dict[str, Any] | None = None, *,  # type: ignore[override]
               objects: list[Obj] | None = None, resource_version: str = "") -> FakeFollowed:
        return FakeFollowed(self, path, query or {},
                            listed=objects is None or not resource_version)

    def wait(self, path: str, condition: Callable[[list[Obj]], T | None], timeout: float,
             on_tick: Callable[[], None] | None = None, **query: Any) -> T | None:
        return self.follow(path, query).wait(condition, timeout, on_tick)

    def pass_time(self) -> None:
        for act in self.while_waiting:
            act(self)
        for key, obj in list(self.objects.items()):
            if obj["metadata"].get("deletionTimestamp") and (
                    f"{key[2]}/{key[3]}" not in self.kept_terminating):
                del self.objects[key]

    # ---- what the server does -------------------------------------------------------------

    def _list(self, path: str, query: dict[str, Any]) -> list[Obj]:
        prefix, resource, namespace, _, _ = _parse(path)
        found = [o for (p, r, ns, _), o in self.objects.items()
                 if (p, r) == (prefix, resource) and namespace in (None, ns)]
        return [copy.deepcopy(o) for o in found
                if _labels_match(o, query.get("labelSelector", ""))
                and _fields_match(o, query.get("fieldSelector", ""))]

    def _page(self, items: list[Obj], query: dict[str, Any]) -> Obj:
        """With ``limit``, at most that many objects in key order and a `continue` token
        while more are left, as the API server pages a list."""
        metadata: Obj = {"resourceVersion": str(next(self._versions))}
        limit = int(query.get("limit") or 0)
        if limit:
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            start = int(query.get("continue") or 0)
            if start + limit < len(items):
                metadata["continue"] = str(start + limit)
            items = items[start:start + limit]
        return {"items": items, "metadata": metadata}

    def _evict(self, key: Key, body: Obj) -> None:
        error = self.eviction_errors.get(f"{key[2]}/{key[3]}")
        if error is not None:
            raise error
        grace = (body.get("deleteOptions") or {}).get("gracePeriodSeconds")
        self._terminate(self.objects[key], grace)

    def _delete(self, key: Key, body: Obj | None) -> None:
        obj = self.objects[key]
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        if uid is not None and uid != obj["metadata"]["uid"]:
            raise api_error(409, "the UID in the precondition does not match", "Conflict")
        if key[1] == "pods":  # pods terminate first; other objects go at once
            self._terminate(obj, (body or {}).get("gracePeriodSeconds"))
        else:
            del self.objects[key]

    def _terminate(self, pod: Obj, grace: int | None) -> None:
        meta = pod["metadata"]
        if grace is None:
            grace = pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        meta.setdefault("deletionTimestamp", DELETION_STAMP)
        meta.setdefault("deletionGracePeriodSeconds", grace)
        meta["resourceVersion"] = str(next(self._versions))


class FakeFollowed:
    """`Followed` over the fake's objects: it always sees them as they are now, and a wait
    checks ``condition``, lets time pass once, checks again: what the real wait sees before
    its deadline, without the waiting. Its one list is recorded as a GET, as the real one
    makes it."""

    def __init__(self, kube: FakeKube, path: str, query: dict[str, Any], listed: bool) -> None:
        self.kube, self.path, self.query = kube, path, query
        if listed:
            kube.requests.append(("GET", path, None))

    @property
    def objects(self) -> list[Obj]:
        return self.kube._list(self.path, self.query)

    def wait(self, condition: Callable[[list[Obj]], T | None], timeout: float,
             on_tick: Callable[[], None] | None = None) -> T | None:
        self.kube.waits += 1
        if result := condition(self.objects):
            return result
        if on_tick is not None:
            on_tick()
        self.kube.pass_time()
        return condition(self.objects) or None


class FollowedEchoPods:
    """The connectivity monitor's `EchoPods` on this fake, without its watch thread (the fake's
    waits do not block, so the thread would spin, letting the fake's time pass): the followed
    collection always shows the pods as they are now, which the thread keeps the real one close
    to. Tests running the real monitor on the fake put it in place of `EchoPods`."""

    def __init__(self, kube: FakeKube, namespace: str) -> None:
        self.followed = kube.follow(f"/api/v1/namespaces/{namespace}/pods",
                                    {"labelSelector": ECHO_SELECTOR})

    def current(self) -> list[Obj]:
        return self.followed.objects

    def close(self) -> None:
        pass


def _parse(path: str) -> tuple[str, str, str | None, str | None, str | None]:
    """API prefix, resource, namespace, name, subresource of a REST path."""
    parts = path.strip("/").split("/")
    width = 2 if parts[0] == "api" else 3  # /api/v1 or /apis/group/version
    prefix, rest = "/" + "/".join(parts[:width]), parts[width:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, resource, tail = rest[1], rest[2], rest[3:]
    else:
        namespace, resource, tail = None, rest[0], rest[1:]
    return (prefix, resource, namespace, tail[0] if tail else None,
            tail[1] if len(tail) > 1 else None)


def _labels_match(obj: Obj, selector: str) -> bool:
    """``key=value`` and bare ``key`` (exists) terms, comma-separated."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def _fields_match(obj: Obj, selector: str) -> bool:
    """``dotted.path=value`` terms, comma-separated; a missing field is the empty string, and
    booleans read "true"/"false", as the server formats them (``spec.unschedulable=true``)."""
    for term in filter(None, selector.split(",")):
        field, _, value = term.partition("=")
        current: Any = obj
        for part in field.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if isinstance(current, bool):
            current = str(current).lower()
        elif current is None and value in ("true", "false"):
            current = "false"  # an unset boolean field reads "false" (spec.hostNetwork)
        if str(current if current is not None else "") != value:
            return False
    return True


def _json_patch(target: Obj, operations: list[Obj]) -> None:
    """The `test` and `remove` ops of a JSON patch (RFC 6902) on map paths, all or nothing:
    a test that fails or a path that is missing answers 422, as the API server does."""
    changed = copy.deepcopy(target)
    for op in operations:
        *parents, last = [t.replace("~1", "/").replace("~0", "~")
                          for t in op["path"].lstrip("/").split("/")]
        holder: Any = changed
        for token in parents:
            holder = holder.get(token) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or last not in holder:
            raise api_error(422, f"path {op['path']} is missing", "Invalid")
        if op["op"] == "test" and holder[last] != op["value"]:
            raise api_error(422, f"test of {op['path']} failed", "Invalid")
        if op["op"] == "remove":
            del holder[last]
        elif op["op"] != "test":
            raise NotImplementedError(op["op"])
    target.clear()
    target.update(changed)


def _merge(target: Obj, patch: Obj) -> None:
    """A JSON merge patch: None removes a key, dicts merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


# ---- objects as the server holds them ------------------------------------------------------

def node(name: str, boot_id: str = "boot-1", ready: bool = True) -> Obj:
    return {"metadata": {"name": name},
            "spec": {},
            "status": {"nodeInfo": {"bootID": boot_id},
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def pod(name: str, node_name: str = "node-1", *, namespace: str = "apps",
        owner: str | None = "ReplicaSet",
        labels: dict[str, str] | None = None, ip: str | None = "10.244.1.10",
        phase: str = "Running", ready: bool = True, host_network: bool = False,
        empty_dirs: tuple[str, ...] = (), annotations: dict[str, str] | None = None,
        terminating: bool = False) -> Obj:
    """A pod; ``owner`` is the kind of its controller (None: a pod no controller owns)."""
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {},
                 "annotations": annotations or {}}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner, "name": f"{name}-owner", "controller": True}]
    if terminating:
        meta["deletionTimestamp"] = DELETION_STAMP
        meta["deletionGracePeriodSeconds"] = 30
    status: Obj = {"phase": phase,
                   "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip is not None:
        status["podIP"] = ip
    return {"metadata": meta,
            "spec": {"nodeName": node_name, "hostNetwork": host_network,
                     "containers": [{"name": "app", "image": "app"}],
                     "volumes": [{"name": v, "emptyDir": {}} for v in empty_dirs]},
            "status": status}
