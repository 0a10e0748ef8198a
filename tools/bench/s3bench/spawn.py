"""Start worker processes and collect the one JSON line each prints."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from locals3 import REGION

from .workload import Workload

log = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().parent.parent / "worker.py"


def worker_prefix(endpoint: str, workload: Workload) -> list[str]:
    """The arguments every ``worker.py`` command starts with: where the server is, what to run."""
    return ["--endpoint", endpoint, "--region", REGION, "--workload", workload.to_json()]


class WorkerError(RuntimeError):
    """A worker exited with an error or printed no result."""


def run_worker(
    arguments: list[str], *, env: dict[str, str], timeout: float, log_level: str
) -> dict[str, Any]:
    """Run ``worker.py`` with ``arguments``; its stderr (logs) goes to ours.

    Raises:
        WorkerError: it failed, timed out, or its last stdout line is not JSON.
    """
    command = [sys.executable, str(WORKER), "--log-level", log_level, *arguments]
    log.debug("starting %s", command)
    try:
        completed = subprocess.run(
            command, stdout=subprocess.PIPE, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise WorkerError(f"worker timed out after {timeout:.0f} s") from error
    if completed.returncode != 0:
        raise WorkerError(f"worker exited with code {completed.returncode} (see its log above)")
    lines = completed.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise WorkerError(f"worker printed no JSON result: {lines[-3:]!r}") from error
    if not isinstance(result, dict):
        raise WorkerError(f"worker printed {type(result).__name__}, not an object")
    return result
