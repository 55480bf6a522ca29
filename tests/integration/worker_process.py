"""A worker process for crash tests:
`worker_process.py ADDRESS QUEUE CLUSTER KUBECONFIG HELM [DOCKER]`.

Kept apart from the product's `cilium-migrate worker` so the test controls exactly what runs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from activities.context import ActivityContext  # noqa: E402
from activities.registry import activities  # noqa: E402
from worker.build import build_worker, connect  # noqa: E402


async def main(address: str, task_queue: str, cluster: str, kubeconfig: str, helm: str,
               docker: str = "docker") -> None:
    client = await connect(address)
    context = ActivityContext(kubeconfigs={cluster: kubeconfig}, helm=helm, docker=docker)
    async with build_worker(client, activities(context), task_queue=task_queue):
        print("worker running", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
