"""The crash matrix's representative points in the default run (`bench/crash_matrix.py` runs
every point, three times each): a crash in a long cluster step whose child process outlives the
worker (helm installing Cilium), and one at the very end of a short node step (uncordon done,
its result never reported). The drain and the reboot wait are crashed in
tests/integration/test_migration.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.toolchain import Toolchain
from tests.chaos.matrix import POINTS, run_point

pytestmark = pytest.mark.sandbox

REPRESENTATIVE = ["helm install", "uncordon"]


@pytest.mark.parametrize("name", REPRESENTATIVE)
async def test_a_worker_killed_inside_a_step_leaves_nothing_done_twice_or_half_done(
        name: str, temporal_env: Any, toolchain: Toolchain, tmp_path: Path) -> None:
    point = next(p for p in POINTS if p.name == name)
    address = temporal_env.client.service_client.config.target_host
    outcome = await run_point(point, temporal_env.client, address, toolchain, tmp_path)
    assert outcome.crashed, f"the worker never reached {name}"
    assert outcome.violations == []
