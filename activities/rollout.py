"""When a DaemonSet or Deployment has rolled out, and waiting for it.

Shared by the steps that wait for Cilium, restart its agents, and judge the cluster's health:
they must agree on what "rolled out" means, or a health check would pass a rollout the wait
still considers under way.
"""

from __future__ import annotations

from collections.abc import Callable

from activities.context import heartbeat
from activities.kubeapi import Kube, Obj, condition_true

# Waits that may simply need more time fail with this type, which Temporal retries.
NOT_READY_YET = "NotReadyYet"


def daemonset_rolled_out(ds: Obj) -> bool:
    """Every scheduled pod runs the current template and is Ready and available."""
    if not ds:
        return False
    status, desired = ds.get("status", {}), ds.get("status", {}).get("desiredNumberScheduled", 0)
    return (status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
            and status.get("updatedNumberScheduled", 0) == desired
            and status.get("numberReady", 0) == desired
            and status.get("numberAvailable", 0) == desired)


def deployment_rolled_out(deployment: Obj) -> bool:
    if not deployment:
        return False
    status, wanted = deployment.get("status", {}), deployment["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == wanted
            and status.get("availableReplicas", 0) >= wanted
            and condition_true(deployment, "Available"))


def daemonset_progress(ds: Obj) -> str:
    """How far a DaemonSet's rollout is, for an operator."""
    status = ds.get("status", {})
    return (f"{status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)} ready, "
            f"{status.get('updatedNumberScheduled', 0)} up to date")


def wait_rolled_out(kube: Kube, collection: str, name: str, done: Callable[[Obj], bool],
                    timeout: float) -> Obj:
    """Waits for ``done(object)`` at most ``timeout`` seconds in all; returns the object as last
    seen ({} when missing). A wait during which nothing counts as progress."""
    return wait_while_progressing(kube, collection, name, done, lambda _: None, timeout)


def daemonset_moves(ds: Obj) -> tuple[int, int, int]:
    """What grows while a DaemonSet's rollout goes on: pods on the new template, Ready ones,
    available ones."""
    status = ds.get("status", {})
    return (status.get("updatedNumberScheduled", 0), status.get("numberReady", 0),
            status.get("numberAvailable", 0))


def wait_while_progressing(kube: Kube, collection: str, name: str, done: Callable[[Obj], bool],
                           moves: Callable[[Obj], object], stall_seconds: float) -> Obj:
    """Waits for ``done(object)`` for as long as the rollout moves: every change of
    ``moves(object)`` starts a new ``stall_seconds``. A rolling restart of a DaemonSet with
    thousands of pods, a few at a time, takes hours on a healthy cluster; what is wrong is a
    rollout that stands still. Returns the object as last seen ({} when missing)."""
    followed = kube.follow(collection, {"fieldSelector": f"metadata.name={name}"})

    def current() -> Obj:
        objects = followed.objects
        return objects[0] if objects else {}

    def moved_since(before: object) -> Callable[[list[Obj]], bool]:
        return lambda items: bool(items) and (done(items[0]) or moves(items[0]) != before)

    while not done(last := current()):
        if not followed.wait(moved_since(moves(last)), max(stall_seconds, 0),
                             on_tick=lambda: heartbeat(waiting_for=name)):
            break
    return current()
