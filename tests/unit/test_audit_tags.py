"""Counting the audit log by a caller's tag: the migration bench tells the connectivity
monitor's requests (a cost per second of waves) from the steps' (a cost per node)."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox import audit

WORKER = "cilium-migrate-worker"


def event(audit_id: str, verb: str, uri: str, resource: str = "pods",
          subresource: str = "", stage: str = "ResponseComplete") -> str:
    ref = {"resource": resource, **({"subresource": subresource} if subresource else {})}
    return json.dumps({"auditID": audit_id, "stage": stage, "verb": verb, "requestURI": uri,
                       "user": {"username": WORKER}, "objectRef": ref})


def test_requests_are_counted_by_the_tag_their_uri_gets(tmp_path: Path) -> None:
    log = audit.audit_log(tmp_path)
    log.parent.mkdir(parents=True)
    log.write_text("\n".join([
        event("1", "get", "/api/v1/namespaces/e/pods/a:8080/proxy/dial?request=x", "pods",
              "proxy"),
        event("2", "list", "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dcilium"),
        event("3", "get", "/api/v1/namespaces/e/pods/b:8080/proxy/dial?request=x", "pods",
              "proxy"),
        event("3", "get", "/api/v1/namespaces/e/pods/b:8080/proxy/dial?request=x", "pods",
              "proxy", stage="ResponseStarted"),  # one request, two stages
    ]) + "\n")
    counts = audit.count_requests(
        tmp_path, tag=lambda uri: "monitor" if "/proxy/dial" in uri else "")
    assert counts.total(WORKER) == 3
    assert counts.total(WORKER, tag="monitor") == 2
    assert counts.total(WORKER, tag="") == 1
    assert audit.count_requests(tmp_path).total(WORKER, tag="") == 3  # untagged: all ""
