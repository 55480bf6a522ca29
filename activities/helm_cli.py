"""Running the `helm` binary as a child process, heartbeating while it works.

Helm's own error output is what an operator needs to read (schema and template errors name the
value), so it becomes the step's failure as is.
"""

from __future__ import annotations

import socket
import subprocess
import time

from temporalio import activity

from activities.context import heartbeat, step_error
from plan.contract import StepError

# How often a running helm is looked at (and the step heartbeats).
POLL_SECONDS = 5.0


def run_helm(argv: list[str], timeout: float) -> str:
    """Runs helm, heartbeating while it works; its stderr is the error (schema errors too)."""
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    except OSError as error:
        missing = isinstance(error, FileNotFoundError)
        said = ("not found (pass --helm PATH, or put helm on PATH)" if missing
                else str(error))
        raise step_error(StepError.HELM_FAILED, f"cannot run {argv[0]}: {said}") from error
    # Where helm runs: a later attempt on this host can tell whether it still does.
    where = {"helm": argv[1], "helm_pid": process.pid, "host": socket.gethostname()}
    if activity.in_activity():  # `cilium-migrate plan` renders the chart outside any step
        heartbeat(**where)
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = process.communicate(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                raise step_error(StepError.HELM_FAILED,
                                 f"helm {argv[1]} did not finish within {timeout:.0f}s") from None
            heartbeat(**where)
        except BaseException:  # cancelled: do not leave helm running behind us
            process.kill()
            raise
    if process.returncode != 0:
        raise step_error(StepError.HELM_FAILED,
                         f"helm {argv[1]} failed: {err.strip() or out.strip()}")
    return out
