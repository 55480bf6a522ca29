"""Entry point: ``python -m sandbox.simulator --state-dir DIR`` (started by `sandbox up`)."""

from __future__ import annotations

import argparse
import faulthandler
import functools
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from activities.kubeapi import Kube
from sandbox.simulator.datapath import Datapath, SimulatedDatapath
from sandbox.simulator.kubelet import Settings, Simulator
from sandbox.topology import Topology


def main() -> None:
    parser = argparse.ArgumentParser(prog="sandbox.simulator")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path)
    parser.add_argument("--exit-delay", type=float, default=Settings.exit_delay)
    parser.add_argument("--agent-ready-delay", type=float, default=Settings.agent_ready_delay)
    parser.add_argument("--reboot-seconds", type=float, default=Settings.reboot_seconds)
    parser.add_argument("--lease-renew-seconds", type=float,
                        default=Settings.lease_renew_seconds)
    parser.add_argument("--shared-kernel", action="store_true",
                        help="nodes are containers sharing this machine's kernel, as with kind")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kubeconfig = args.kubeconfig or args.state_dir / "kubeconfigs" / "node-simulator.kubeconfig"
    topology = Topology.load(args.state_dir / "topology.json")
    datapath: Callable[[Simulator], Datapath] = SimulatedDatapath
    if topology.network is not None:
        # Imported only here: the real datapath needs the network tools and Linux.
        from sandbox.nettools import find_network_tools
        from sandbox.simulator.real_datapath import RealDatapath
        datapath = functools.partial(RealDatapath, plan=topology.network,
                                     tools=find_network_tools())
    simulator = Simulator(
        Kube(str(kubeconfig)), topology, args.state_dir,
        Settings(exit_delay=args.exit_delay, agent_ready_delay=args.agent_ready_delay,
                 reboot_seconds=args.reboot_seconds,
                 lease_renew_seconds=args.lease_renew_seconds,
                 shared_kernel=args.shared_kernel), datapath=datapath)
    # A crash in C code (no Python traceback) still leaves every thread's stack in the log, and
    # `kill -USR1 PID` writes them too: where a stuck simulator waits.
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stop())
    signal.signal(signal.SIGINT, lambda *_: simulator.stop())
    simulator.run()


if __name__ == "__main__":
    main()
