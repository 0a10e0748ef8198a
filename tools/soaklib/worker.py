"""One soak process: ``threads`` WorkerThreads on one S3Client, reporting a JSON line per interval.

Run by tools/soak.py as ``python -m soaklib.worker '<json settings>'``. It prints
``PROGRESS {...}`` every ``interval`` seconds and ``FINAL {...}`` at the end
(the :class:`~soaklib.ops.Stats` snapshot), then exits 0.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from s3torch.client import S3Client, S3ClientConfig

from .ops import Stats, WorkerThread, drain

MiB = 1024 * 1024


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Run the threads for ``settings["seconds"]``; the final stats."""
    config = S3ClientConfig(
        force_path_style=True, part_size=5 * MiB, memory_limit=256 * MiB, max_attempts=10
    )
    stats = Stats()
    stop = threading.Event()
    prefix = f"{settings['run']}/p{settings['process']}/"
    with S3Client(settings["region"], endpoint=settings["endpoint"], s3client_config=config) as c:
        workers = [
            WorkerThread(
                c,
                settings["region"],
                settings["bucket"],
                f"{prefix}t{number}/",
                settings["seed"] * 1000 + settings["process"] * 100 + number,
                stats,
                stop,
                settings["max_object"],
            )
            for number in range(settings["threads"])
        ]
        threads = [
            threading.Thread(target=worker.run, name=f"soak-{index}", daemon=True)
            for index, worker in enumerate(workers)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + settings["seconds"]
        while time.monotonic() < deadline:
            time.sleep(min(settings["interval"], max(0.0, deadline - time.monotonic())))
            print("PROGRESS " + json.dumps(stats.snapshot()), flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        stuck = [thread.name for thread in threads if thread.is_alive()]
        try:
            drain(c, settings["bucket"], prefix)
        except Exception as error:
            stats.error("drain", error)
    final = stats.snapshot()
    final["stuck_threads"] = stuck
    return final


def main() -> None:
    final = run(json.loads(sys.argv[1]))
    print("FINAL " + json.dumps(final), flush=True)


if __name__ == "__main__":
    main()
