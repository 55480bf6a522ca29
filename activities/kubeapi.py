"""Kubernetes API access as plain JSON dicts over the official `kubernetes` client.

Used by the activities and by the sandbox's node simulator. It skips the client's model
deserialisation (the costly part with hundreds of objects) and works on the JSON the server
sends, addressed by REST paths. Watches resume from the last resourceVersion and fall back to a
fresh list when the server says it is too old.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


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
        self.api = client.ApiClient(configuration)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str | None = None,
                timeout: float | tuple[float, float] = 30.0) -> Any:
        """One request; returns the decoded JSON body, raises ApiException on an error status."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        method, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason,
                               http_resp=response)
        return json.loads(data) if data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

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

    def _stream(self, path: str, resource_version: str,
                query: dict[str, Any]) -> Iterator[tuple[str, Obj]]:
        params = {**query, "watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": 300}
        method, url, headers, _, _ = self.api.param_serialize(
            method="GET", resource_path=path, query_params=list(params.items()),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = self.api.rest_client.request(method, url, headers=headers,
                                                _request_timeout=(10, 330))
        try:
            if response.status != 200:
                raise ApiException(status=response.status, reason=response.reason)
            for line in iter_resp_lines(response.response):
                event = json.loads(line)
                yield event["type"], event["object"]
        finally:
            response.response.release_conn()
