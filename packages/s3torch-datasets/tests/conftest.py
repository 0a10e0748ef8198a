"""Fixtures of the s3torch-datasets tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def upload(boto3_s3: Any, bucket: str) -> Callable[..., dict[str, bytes]]:
    """``upload(keys, size=...)``: put objects with boto3 (16 at a time); returns key -> bytes."""

    def put(keys: Iterable[str], size: int = 100) -> dict[str, bytes]:
        objects = {key: os.urandom(size) for key in keys}
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda item: boto3_s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                    objects.items(),
                )
            )
        return objects

    return put


@pytest.fixture
def options(s3_region: str, s3_endpoint: str) -> dict[str, Any]:
    """The keyword arguments every dataset of the tests takes: the local server."""
    return {"region": s3_region, "endpoint": s3_endpoint}


RunRanks = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def run_ranks(s3_endpoint: str, s3_region: str) -> RunRanks:
    """``run_ranks(script, world, task, tmp_path, limit=240)``: a gloo job of real rank processes.

    Runs ``python script RANK WORLD INIT_FILE ENDPOINT REGION TASK_JSON OUTPUT``
    for each rank against the test server; fails (with the ranks' logs) unless
    every rank exits 0 within ``limit`` seconds; returns each rank's JSON output.
    """

    def run(
        script: Path, world: int, task: dict[str, Any], tmp_path: Path, limit: float = 240
    ) -> list[dict[str, Any]]:
        job = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        job.mkdir()
        outputs = [job / f"rank{rank}.json" for rank in range(world)]
        logs = [job / f"rank{rank}.log" for rank in range(world)]
        ranks = []
        for rank in range(world):
            with open(logs[rank], "wb") as log:
                arguments = [str(rank), str(world), str(job / "init"), s3_endpoint, s3_region]
                ranks.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(script),
                            *arguments,
                            json.dumps(task),
                            str(outputs[rank]),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + limit
        try:
            for rank in ranks:
                rank.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for rank in ranks:
                if rank.poll() is None:
                    rank.kill()
                    rank.wait()
        codes = [rank.returncode for rank in ranks]
        assert codes == [0] * world, "\n".join(log.read_text()[-3000:] for log in logs)
        return [json.loads(output.read_text()) for output in outputs]

    return run
