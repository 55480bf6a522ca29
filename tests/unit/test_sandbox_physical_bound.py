"""The shortest wall time of a plan on the sandbox, from the simulator's delays."""

from __future__ import annotations

import pytest

from sandbox.physical_bound import Timings, node_bound, plan_bound, rolling_max_unavailable

TIMINGS = Timings(exit_delay=0.5, agent_ready_delay=1.0, reboot_seconds=1.0,
                  container_restart_seconds=0.5)


def test_a_node_without_pods_to_evict_waits_only_for_its_agent_and_reboot() -> None:
    bound = node_bound([], TIMINGS)
    assert bound.drain == 0.0
    assert bound.restart_agent == 0.5 + 1.0  # the old agent exits, the new one gets Ready
    assert bound.reboot == 1.0 + 0.5 + 1.0  # down, containers restart, agent Ready
    assert bound.total == 4.0


def test_evicted_pods_exit_side_by_side_at_the_shorter_of_exit_delay_and_grace() -> None:
    assert node_bound([30.0, 30.0, 30.0], TIMINGS).drain == 0.5
    assert node_bound([0.0, 0.2], TIMINGS).drain == 0.2


def test_a_wave_lasts_as_long_as_its_slowest_node_and_waves_add_up() -> None:
    bound = plan_bound([["a"], ["b", "c"]], {"c": [30.0]}, nodes=3, timings=TIMINGS)
    assert bound.waves == [4.0, 4.5]
    assert bound.slowest[1].drain == 0.5
    assert bound.install == 1.0
    # Three agents, two at a time: two rounds of exit and start.
    assert bound.finalize == 2 * 1.5
    assert bound.total == pytest.approx(1.0 + 8.5 + 3.0)


def test_the_final_rolling_restart_grows_with_the_cluster_not_the_waves() -> None:
    small = plan_bound([["a"]], {}, nodes=1000, timings=TIMINGS, agent_max_unavailable=2)
    wide = plan_bound([["a"]], {}, nodes=1000, timings=TIMINGS, agent_max_unavailable=100)
    assert small.finalize == 500 * 1.5
    assert wide.finalize == 10 * 1.5


def test_an_empty_wave_costs_nothing() -> None:
    assert plan_bound([[]], {}, nodes=0, timings=TIMINGS).waves == [0.0]


@pytest.mark.parametrize(("rolling", "expected"), [
    ({"maxUnavailable": 2}, 2),         # the Cilium chart's default
    ({"maxUnavailable": "10%"}, 100),   # a percentage of the desired agents
    ({"maxUnavailable": "0.1%"}, 1),    # rounded up, as the DaemonSet controller does
    ({"maxUnavailable": 0}, 1),         # at least one (a surge-only update still moves)
    ({}, 1),                            # unset: Kubernetes' default
    (None, 1),
])
def test_the_rolling_restarts_pace_is_read_from_the_daemonset(
        rolling: dict[str, object] | None, expected: int) -> None:
    strategy = {"type": "RollingUpdate"} | ({} if rolling is None else {"rollingUpdate": rolling})
    assert rolling_max_unavailable({"spec": {"updateStrategy": strategy}}, 1000) == expected
