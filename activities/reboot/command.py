"""Reboot by running a command on the worker, such as an ssh call to the node; `{node}` and
`{ip}` in its arguments are replaced by the node's name and InternalIP.

It cannot tell whether the node took the request; the reboot step records in its heartbeat
that the command ran, so a retry does not run it twice.
"""

from __future__ import annotations

import subprocess

from activities.context import step_error
from activities.kubeapi import Kube, Obj, boot_id
from plan.contract import RebootInput, StepError
from plan.spec import render_command

COMMAND_TIMEOUT_SECONDS = 300


class CommandReboot:
    """Runs ``argv`` when given, else the policy's command."""

    witness_name = "bootID"

    def __init__(self, argv: list[str] | None = None) -> None:
        self.argv = argv

    def boot_witness(self, kube: Kube, node: Obj) -> str:
        return boot_id(node)

    def trigger(self, kube: Kube, node: Obj, request: RebootInput) -> None:
        template = self.argv or request.policy.command
        if not template:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             "the command reboot strategy needs a command")
        addresses = {a["type"]: a["address"] for a in node["status"].get("addresses") or []}
        try:
            argv = render_command(template, request.target.node, addresses.get("InternalIP"))
        except ValueError as error:
            raise step_error(StepError.REBOOT_NOT_COMPLETING, str(error)) from error
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=COMMAND_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             f"reboot command {argv[0]} failed: {error}") from error
        if result.returncode != 0:
            raise step_error(StepError.REBOOT_NOT_COMPLETING,
                             f"reboot command {' '.join(argv)} exited {result.returncode}: "
                             f"{result.stderr.strip() or result.stdout.strip()}")

    def settle(self, kube: Kube, request: RebootInput, rebooted: bool) -> str:
        return ""
