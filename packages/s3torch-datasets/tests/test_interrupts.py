"""Ctrl-C while a DataLoader reads from S3: KeyboardInterrupt, promptly, nothing left running."""

from __future__ import annotations

import json
import os
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
    command = [sys.executable, str(JOB), kind, str(workers), s3_endpoint, s3_region]
    command += [f"s3://{bucket}/data/", str(delay)]
    for _attempt in range(3):
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # a process group of its own, as a terminal job has
            check=False,
        )
        # A negative code is a death by signal; a hang would have hit the timeout.
        assert completed.returncode == 0, (completed.returncode, completed.stderr[-3000:])
        result = json.loads(completed.stdout.splitlines()[-1])
        if result["outcome"] == "KeyboardInterrupt" or not discarded_outside_s3torch(
            completed.stderr
        ):
            break
    assert result["outcome"] == "KeyboardInterrupt", (result, completed.stderr[-3000:])
    assert result["latency"] < 5.0, result
    assert result["samples"] > 0, result


def discarded_outside_s3torch(stderr: str) -> bool:
    """Whether CPython discarded the Ctrl-C in code that is not s3torch's.

    CPython prints and drops what a fork hook, a ``__del__`` or a weakref
    callback raises. A DataLoader forks its workers at every epoch, and the
    standard library's own fork hooks (logging's) can catch the signal: the
    job then never sees it, with or without s3torch. That run says nothing
    about us and is run again; a Ctrl-C dropped in s3torch code fails.
    """
    dropped = [
        report
        for report in stderr.split("Exception ignored in")[1:]
        if "KeyboardInterrupt" in report
    ]
    return bool(dropped) and not any(f"{os.sep}s3torch{os.sep}" in report for report in dropped)
