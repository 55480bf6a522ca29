"""How long a migration is likely to take, for planning a fleet's calendar.

A rough figure from the plan's shape, not a promise: each wave costs about what a drain, an
agent restart, a reboot and a probe take on a typical node, and finalize restarts the Cilium
agents two at a time (the DaemonSet's default). Time spent waiting for approvals is left out,
since people decide it; a stage's soak time is added by `fleet_duration`.
"""

from __future__ import annotations

import math
from datetime import timedelta

from plan.planner import MigrationPlan

INSTALL = timedelta(minutes=5)  # helm install and every agent Ready
PER_WAVE = timedelta(minutes=5)  # drain, restart the agent, reboot, verify (in parallel)
AGENT_RESTART = timedelta(seconds=30)  # per pair of agents at finalize
FINALIZE = timedelta(minutes=5)  # recycle pods, helm upgrade, remove flannel


def migration_duration(plan: MigrationPlan) -> timedelta:
    restarts = math.ceil(plan.facts.nodes / 2) * AGENT_RESTART
    return INSTALL + PER_WAVE * len(plan.waves) + restarts + FINALIZE


def stage_duration(durations: list[timedelta], concurrency: int, soak: timedelta) -> timedelta:
    """Clusters start in order as slots free up, ``concurrency`` at a time; then the soak."""
    slots = [timedelta(0)] * max(1, concurrency)
    for duration in durations:
        earliest = slots.index(min(slots))
        slots[earliest] += duration
    return max(slots) + soak
