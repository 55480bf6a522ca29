"""Who asks the sandbox's API server for what: its audit policy, and counting its audit log.

The API server writes one JSON line per request stage (``--audit-log-path``). The policy keeps
it cheap: Metadata level (no bodies), no RequestReceived stage, and only the users whose traffic
a benchmark or test compares (the product's worker, the node simulator, the admin, and service
accounts: a worker acting with its Helm chart's RBAC); controllers and the scheduler are not
recorded. A request then leaves one line, or two for a watch or
another long-running request (ResponseStarted when it opens, ResponseComplete when it closes),
so counting goes by audit ID.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

AUDIT_LOG = Path("logs") / "audit.log"  # within the state directory
AUDIT_POLICY = "audit-policy.yaml"


def audit_log(state_dir: Path) -> Path:
    return state_dir / AUDIT_LOG


def write_policy(path: Path, users: Iterable[str], groups: Iterable[str] = ()) -> Path:
    """An audit policy recording the requests of ``users`` and of members of ``groups`` at
    Metadata level, nobody else's."""
    recorded: list[dict[str, object]] = [{"level": "Metadata", "users": sorted(users)}]
    if groups := sorted(groups):
        recorded.append({"level": "Metadata", "userGroups": groups})
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "omitManagedFields": True,
        "rules": [*recorded, {"level": "None"}],
    }
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@dataclass(frozen=True)
class RequestKey:
    user: str
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection, ...
    resource: str  # "pods", "pods/eviction", "nodes/status", or the path of a non-resource URL
    tag: str = ""  # what the counting caller's `tag` made of the request, if anything


@dataclass
class RequestCounts:
    """Requests by user, verb and resource, each counted once however many stages it logged."""

    counts: Counter[RequestKey] = field(default_factory=Counter)

    def of(self, user: str) -> Counter[RequestKey]:
        return Counter({key: n for key, n in self.counts.items() if key.user == user})

    def total(self, user: str, *, watches: bool = False, tag: str | None = None) -> int:
        """A user's requests: without watches, or only its watches; only those tagged ``tag``
        when given."""
        return sum(n for key, n in self.counts.items()
                   if key.user == user and (key.verb == "watch") == watches
                   and (tag is None or key.tag == tag))

    def users(self) -> set[str]:
        return {key.user for key in self.counts}


def mark(state_dir: Path) -> int:
    """Where the audit log ends now: pass it to `count_requests` to count only what follows."""
    path = audit_log(state_dir)
    return path.stat().st_size if path.exists() else 0


def count_requests(state_dir: Path, since: int = 0,
                   tag: Callable[[str], str] | None = None) -> RequestCounts:
    """Counts the requests logged after byte ``since`` of the sandbox's audit log; ``tag``
    sorts them further by their request URI (say, which part of a program made them)."""
    counts = RequestCounts()
    seen: set[str] = set()
    path = audit_log(state_dir)
    if not path.exists():
        return counts
    if rotated := sorted(path.parent.glob(f"{path.stem}-*{path.suffix}")):
        raise RuntimeError(f"the audit log was rotated ({rotated[0].name}): a count from "
                           "a byte offset of audit.log would leave requests out")
    with path.open("rb") as log:
        log.seek(since)
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line the API server is still writing
            audit_id = event.get("auditID", "")
            if audit_id in seen:
                continue
            seen.add(audit_id)
            key = _key(event)
            if tag is not None:
                key = replace(key, tag=tag(str(event.get("requestURI", ""))))
            counts.counts[key] += 1
    return counts


def _key(event: dict[str, object]) -> RequestKey:
    user = event.get("user")
    name = user.get("username", "") if isinstance(user, dict) else ""
    ref = event.get("objectRef")
    if isinstance(ref, dict) and ref.get("resource"):
        resource = str(ref["resource"])
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
    else:
        resource = str(event.get("requestURI", "")).split("?", 1)[0]
    return RequestKey(user=str(name), verb=str(event.get("verb", "")), resource=resource)
