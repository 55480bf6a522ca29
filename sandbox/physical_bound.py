"""The shortest wall time a migration plan can take on the sandbox: its physics, no overhead.

The node simulator's delays (`sandbox.simulator.kubelet.Settings`) are the only time that must
pass: a container exits at most ``exit_delay`` after SIGTERM (or at its grace period, if
shorter), a Cilium agent is Ready ``agent_ready_delay`` after its containers start, a reboot
takes ``reboot_seconds`` and containers start ``container_restart_seconds`` after a boot.
Everything else (API calls, scheduling, controllers, Temporal, polling) counts as overhead.

Per phase:
- install: every agent and the operator start at once; Ready after one ``agent_ready_delay``;
- a wave: its nodes migrate side by side, so it lasts as long as its slowest node: drain (its
  evicted pods exit in parallel), agent restart (the old agent exits, the new one gets Ready),
  reboot (down, up, containers restarted, agent Ready again), verify (a probe pod: no delay);
- finalize: no pod is left on a flannel address after the reboots, so recycling costs nothing;
  the agents' rolling restart replaces ``agent_max_unavailable`` agents at a time;
- flannel removal: deletes objects, waits for nothing.

It ignores what could only make a run longer (PodDisruptionBudgets serialising evictions,
rescheduled pods), so it is a lower bound, not a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The Cilium chart's defaults (values.yaml): agents' grace period and rolling update.
AGENT_GRACE_SECONDS = 1.0
AGENT_MAX_UNAVAILABLE = 2
DEFAULT_GRACE_SECONDS = 30.0  # a pod spec's terminationGracePeriodSeconds when unset


@dataclass(frozen=True)
class Timings:
    """The simulator's physical delays, in seconds (the Settings it runs with)."""

    exit_delay: float
    agent_ready_delay: float
    reboot_seconds: float
    container_restart_seconds: float

    def pod_exit(self, grace_seconds: float) -> float:
        """A pod that honours SIGTERM is gone after ``exit_delay`` or its grace period."""
        return min(grace_seconds, self.exit_delay)


@dataclass(frozen=True)
class NodeBound:
    drain: float
    restart_agent: float
    reboot: float
    verify: float = 0.0

    @property
    def total(self) -> float:
        return self.drain + self.restart_agent + self.reboot + self.verify


@dataclass(frozen=True)
class PlanBound:
    install: float
    waves: list[float]
    slowest: list[NodeBound]  # each wave's slowest node, by step
    finalize: float
    remove_flannel: float = 0.0

    @property
    def total(self) -> float:
        return self.install + sum(self.waves) + self.finalize + self.remove_flannel


def rolling_max_unavailable(daemonset: Mapping[str, object], desired: int) -> int:
    """How many pods a DaemonSet's rolling update replaces at a time: its
    ``spec.updateStrategy.rollingUpdate.maxUnavailable``, a count or a percentage of the
    desired pods rounded up (as the DaemonSet controller reads it), 1 when unset; at least 1."""
    spec = daemonset.get("spec")
    strategy = spec.get("updateStrategy") if isinstance(spec, Mapping) else None
    rolling = strategy.get("rollingUpdate") if isinstance(strategy, Mapping) else None
    value = rolling.get("maxUnavailable", 1) if isinstance(rolling, Mapping) else 1
    if isinstance(value, str) and value.endswith("%"):
        return max(1, math.ceil(desired * float(value[:-1]) / 100))
    return max(1, int(str(value)))


def node_bound(evicted_grace_seconds: Sequence[float], timings: Timings,
               agent_grace_seconds: float = AGENT_GRACE_SECONDS) -> NodeBound:
    """One node's migration: ``evicted_grace_seconds`` are the grace periods of the pods its
    drain evicts (DaemonSet pods stay)."""
    agent_start = timings.agent_ready_delay
    return NodeBound(
        drain=max((timings.pod_exit(g) for g in evicted_grace_seconds), default=0.0),
        restart_agent=timings.pod_exit(agent_grace_seconds) + agent_start,
        reboot=timings.reboot_seconds + timings.container_restart_seconds + agent_start,
    )


def plan_bound(waves: Sequence[Sequence[str]], evicted: Mapping[str, Sequence[float]],
               nodes: int, timings: Timings,
               agent_max_unavailable: int = AGENT_MAX_UNAVAILABLE,
               agent_grace_seconds: float = AGENT_GRACE_SECONDS) -> PlanBound:
    """The plan's shortest wall time: ``waves`` name the nodes of each wave in order,
    ``evicted`` maps a node to its evicted pods' grace periods, ``nodes`` is every agent the
    final rolling restart replaces."""
    per_wave = [[node_bound(evicted.get(n, ()), timings, agent_grace_seconds) for n in wave]
                for wave in waves]
    slowest = [max(bounds, key=lambda b: b.total) if bounds else NodeBound(0.0, 0.0, 0.0)
               for bounds in per_wave]
    rounds = math.ceil(nodes / max(agent_max_unavailable, 1))
    finalize = rounds * (timings.pod_exit(agent_grace_seconds) + timings.agent_ready_delay)
    return PlanBound(install=timings.agent_ready_delay, waves=[b.total for b in slowest],
                     slowest=slowest, finalize=finalize)
