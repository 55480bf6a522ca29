"""The bounded views of a Progress: a summary whose size does not grow with the node count, and
node records a page at a time."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.large_progress import large_progress
from workflows.progress import NodeState, Progress, WaveProgress
from workflows.progress_summary import (
    LIST_LIMIT,
    PAGE_LIMIT,
    TEXT_LIMIT,
    NodesPageRequest,
    current_wave,
    nodes_page,
    summarize,
    wave_runs,
)


def test_the_summary_counts_what_the_full_progress_holds() -> None:
    progress = large_progress(2000, wave_size=40, blocked=60)

    summary = summarize(progress)

    assert summary.counts == progress.counts()
    assert summary.nodes == 2000 == sum(summary.counts.values())
    assert summary.counts["blocked"] == 60
    assert summary.attention.total == 60 and len(summary.attention.items) == LIST_LIMIT
    assert all(n.state is NodeState.BLOCKED for n in summary.attention.items)
    assert summary.blockers.total == 1 + 60  # the pending gate and each blocked node
    running = next(w for w in progress.waves if w.state == "running")
    assert summary.current_wave is not None
    assert (summary.current_wave.index, summary.current_wave.state) == (running.index, "running")
    assert summary.current_wave.counts == {"running": 20, "pending": 20}
    assert sum(run.nodes for run in summary.waves) == 2000
    assert summary.approvals.total == running.index - 1
    assert summary.approvals.items[-1] == progress.approvals[-1]  # the latest are kept


def test_the_summary_size_does_not_grow_with_the_node_count() -> None:
    # Waves of 10 in alternating zones: 500 waves at 5,000 nodes, each its own zone.
    small = summarize(large_progress(1000, wave_size=10)).model_dump_json()
    large = summarize(large_progress(5000, wave_size=10)).model_dump_json()

    # Only the numbers' digits and the node names in the capped lists differ.
    assert abs(len(large) - len(small)) < 200, (len(small), len(large))
    assert len(large) < 64_000


def test_alike_consecutive_waves_collapse_into_runs() -> None:
    waves = [WaveProgress(index=1, kind="canary", nodes=["a"], state="done"),
             *(WaveProgress(index=i, kind="workers", nodes=["x", "y"], state="done")
               for i in (2, 3, 4)),
             WaveProgress(index=5, kind="workers", nodes=["z"], state="halted"),
             *(WaveProgress(index=i, kind="workers", nodes=["x", "y"], zone="b")
               for i in (6, 7)),
             WaveProgress(index=8, kind="control-plane", nodes=["cp"])]

    runs = [(r.first, r.last, r.kind, r.zone, r.state, r.nodes) for r in wave_runs(waves)]

    assert runs == [(1, 1, "canary", None, "done", 1), (2, 4, "workers", None, "done", 6),
                    (5, 5, "workers", None, "halted", 1), (6, 7, "workers", "b", "pending", 4),
                    (8, 8, "control-plane", None, "pending", 1)]
    waves[6].zone = "c"  # waves of different zones merge; the run names no zone
    assert [(r.first, r.last, r.zone) for r in wave_runs(waves)][3] == (6, 7, None)


def test_the_current_wave_is_running_else_halted_else_next() -> None:
    waves = [WaveProgress(index=1, kind="canary", nodes=["a"], state="done"),
             WaveProgress(index=2, kind="workers", nodes=["b"], state="halted"),
             WaveProgress(index=3, kind="workers", nodes=["c"])]
    progress = Progress(cluster="c", waves=waves, halted="node b was skipped")
    assert current_wave(progress) is waves[1]
    progress.halted = None  # resumed: the next wave waits for its gate
    assert current_wave(progress) is waves[2]
    waves[2].state = "running"
    assert current_wave(progress) is waves[2]
    waves[2].state = "done"
    assert current_wave(progress) is None


def test_pages_slice_the_filtered_nodes_in_wave_order() -> None:
    progress = large_progress(1200, wave_size=100)
    every = sorted(progress.nodes.values(), key=lambda n: (n.wave, n.name))

    first = nodes_page(progress, NodesPageRequest(offset=0, limit=7))
    second = nodes_page(progress, NodesPageRequest(offset=7, limit=7))
    capped = nodes_page(progress, NodesPageRequest(limit=10_000))
    blocked = nodes_page(progress, NodesPageRequest(states=[NodeState.BLOCKED]))
    wave = nodes_page(progress, NodesPageRequest(wave=3, states=[NodeState.MIGRATED,
                                                                 NodeState.BLOCKED]))
    beyond = nodes_page(progress, NodesPageRequest(offset=5000))

    assert first.nodes + second.nodes == every[:14] and first.total == 1200
    assert (capped.limit, len(capped.nodes), capped.total) == (PAGE_LIMIT, PAGE_LIMIT, 1200)
    assert blocked.total == progress.counts()["blocked"]
    assert all(n.state is NodeState.BLOCKED for n in blocked.nodes)
    assert wave.total == 100 and {n.wave for n in wave.nodes} == {3}
    assert (beyond.total, beyond.nodes) == (1200, [])


def test_a_page_request_refuses_a_negative_offset_or_an_empty_limit() -> None:
    with pytest.raises(ValidationError):
        NodesPageRequest(offset=-1)
    with pytest.raises(ValidationError):
        NodesPageRequest(limit=0)


def test_a_halt_reason_naming_every_node_is_cut() -> None:
    progress = Progress(cluster="c", halted="not migrated: " + ", ".join(
        f"worker-{i} (skipped)" for i in range(5000)))

    summary = summarize(progress)

    assert summary.halted is not None and len(summary.halted) < TEXT_LIMIT + 50
    assert summary.halted.endswith("more characters)")
