"""Ctrl-C while a DataLoader reads from S3: KeyboardInterrupt, promptly, nothing left running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

JOB = Path(__file__).with_name("interrupt_job.py")


@pytest.mark.parametrize(
    ("kind", "workers", "delay"),
    [("iterable", 0, 0.3), ("map", 0, 1.0), ("iterable", 2, 1.0), ("map", 2, 0.3)],
)
def test_ctrl_c_during_iteration_raises_keyboard_interrupt_promptly(
    upload: Any,
    bucket: str,
    s3_region: str,
    s3_endpoint: str,
    kind: str,
    workers: int,
    delay: float,
) -> None:
    upload([f"data/{i:04d}" for i in range(100)], size=16 * 1024)
    completed = subprocess.run(
        [
            sys.executable,
            str(JOB),
            kind,
            str(workers),
            s3_endpoint,
            s3_region,
            f"s3://{bucket}/data/",
            str(delay),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # a process group of its own, as a terminal job has
        check=False,
    )
    # A negative code is a death by signal; a hang would have hit the timeout.
    assert completed.returncode == 0, (completed.returncode, completed.stderr[-3000:])
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["outcome"] == "KeyboardInterrupt", result
    assert result["latency"] < 5.0, result
    assert result["samples"] > 0, result
