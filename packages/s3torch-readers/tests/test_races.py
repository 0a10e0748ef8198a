"""Readers closed from another thread mid-read: errors, never a crash or corrupted memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

MiB = 1024 * 1024
SIZE = 6 * MiB + 12345  # more than one 5 MiB part: the sequential reader fills a buffer in place
TIMEOUT = 60.0


def _pattern(size: int) -> bytes:
    block = bytes(range(251))  # the stress script's pattern (it checks every byte it reads)
    return (block * (size // len(block) + 1))[:size]


def test_close_races_run_clean_under_dev_mode_and_the_debug_allocator(
    boto3_s3: Any, bucket: str, s3_endpoint: str, s3_region: str
) -> None:
    """Readers of every kind closed by another thread at random points, results kept.

    The stress runs in a child interpreter with ``-X dev -W error`` and
    ``PYTHONMALLOC=debug`` (freed memory is overwritten with a pattern, guard
    bytes are checked): a read into freed memory or a result aliasing it
    shows up as wrong bytes or a fatal error.
    """
    boto3_s3.put_object(Bucket=bucket, Key="stress", Body=_pattern(SIZE))
    script = Path(__file__).with_name("readers_stress.py")
    environment = {**os.environ, "PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1"}
    arguments = [s3_endpoint, s3_region, bucket, "stress", str(SIZE), "40"]
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "stress: ok" in result.stdout
    assert "'ValueError':" in result.stdout, result.stdout  # some reads did race a close
    assert "'done':" in result.stdout, result.stdout  # and some finished first


@pytest.mark.parametrize("kind", ["sequential", "range_based", "dcp_optimized"])
def test_closing_a_reader_while_a_stream_writes_into_its_buffer(
    gated_client: Any, bucket: str, boto3_s3: Any, kind: str
) -> None:
    """The stream holds a view of the reader's buffer when another thread closes the reader.

    The read then raises the closed-reader error (or, where the buffer is the
    read's own, completes): never a write into freed memory.
    """
    data = os.urandom(SIZE)
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=data)
    if kind == "dcp_optimized":
        constructor: Any = S3ReaderConstructor.dcp_optimized()
        constructor.set_item_ranges({f"s3://{bucket}/obj": [ItemRange(0, SIZE)]})
    elif kind == "range_based":
        constructor = S3ReaderConstructor.range_based(buffer_size=0)
    else:
        constructor = S3ReaderConstructor.sequential()
    reader = get_object(gated_client, bucket, "obj", reader_constructor=constructor)
    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(reader.read(SIZE))
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    assert gated_client.entered.wait(TIMEOUT)  # a stream is writing into the buffer now
    reader.close()
    gated_client.gate.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    if kind == "range_based":  # the read's buffer is its own: the read completes
        assert outcome == [data]
    else:
        assert len(outcome) == 1
        assert isinstance(outcome[0], ValueError), outcome
        assert "closed reader" in str(outcome[0])
        assert "closed during the read" in str(outcome[0])
    with pytest.raises(ValueError, match="closed reader"):
        reader.read(1)
