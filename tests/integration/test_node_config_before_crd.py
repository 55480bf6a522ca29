"""The real Cilium chart ships no CRDs: the operator registers them once it runs. Applying the
CiliumNodeConfig before that happens must wait for the CRD, not fail on a 404."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities import node_config
from activities.node_config import CRD_NAME, CrdNotServed
from plan.contract import NodeConfigInput
from plan.policies import ClusterRef
from sandbox.toolchain import Toolchain
from sandbox.topology import Topology
from tests.conftest import Sandbox, install_cilium
from tests.integration.migration_support import fresh_sandbox

pytestmark = pytest.mark.sandbox

CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
REQUEST = NodeConfigInput(
    cluster=ClusterRef(name="early"), namespace="kube-system", name="cilium-migration",
    api_version="cilium.io/v2", defaults={"write-cni-conf-when-ready": "/host/etc/cni/net.d/"
                                                                       "05-cilium.conflist"})


def test_the_node_config_waits_for_the_operator_to_register_its_crd(
        toolchain: Toolchain, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with fresh_sandbox(state_dir, workers=1, zones=1) as kube:
        assert kube.get_or_none(CRD_PATH) is None  # no Cilium yet: nothing registered it

        # Without an operator, an attempt ends with a retryable error that says what is missing.
        with pytest.raises(CrdNotServed, match="does not exist.*cilium-operator running"):
            ActivityEnvironment().run(node_config.apply_node_config, kube, REQUEST, 0)

        # Applied first, Cilium installed after: the apply waits and then succeeds.
        outcome: dict[str, BaseException | None] = {}

        def apply() -> None:
            try:
                ActivityEnvironment().run(node_config.apply_node_config, kube, REQUEST, 600)
                outcome["error"] = None
            except BaseException as error:  # noqa: BLE001 - handed to the test thread
                outcome["error"] = error

        applier = threading.Thread(target=apply)
        applier.start()
        sandbox = Sandbox(state_dir, toolchain, kube, Topology.load(state_dir / "topology.json"))
        install_cilium(sandbox, tmp_path)
        applier.join(timeout=600)
        assert not applier.is_alive() and outcome == {"error": None}
        applied = kube.get(f"/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs/"
                           f"{REQUEST.name}")
        assert applied["spec"]["defaults"] == REQUEST.defaults
