"""Slow readers hold a bounded amount of memory, not the object.

On SeaweedFS: these need objects larger than the smallest memory_limit
(256 MiB), which moto serves far too slowly.
"""

from __future__ import annotations

import hashlib
import os
import time

import psutil
import pytest

from locals3 import SeaweedFSServer
from s3torch.client import S3Client, S3ClientConfig

pytestmark = pytest.mark.seaweedfs

MiB = 1024 * 1024
OBJECT = 320 * MiB
LIMIT = 256 * MiB


@pytest.fixture
def big_object(seaweedfs_server: SeaweedFSServer, seaweedfs_bucket: str) -> tuple[S3Client, str]:
    client = S3Client(
        "us-east-1",
        endpoint=seaweedfs_server.endpoint,
        s3client_config=S3ClientConfig(memory_limit=LIMIT),
    )
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    with client.put_object(seaweedfs_bucket, "big") as writer:
        for i in range(OBJECT // MiB):
            piece = block[i % 7 :] + block[: i % 7]  # every MiB different
            digest.update(piece)
            writer.write(piece)
    return client, digest.hexdigest()


def test_a_slow_reader_buffers_a_bounded_amount(
    big_object: tuple[S3Client, str], seaweedfs_bucket: str
) -> None:
    client, expected = big_object
    budget = client._client().budget
    process = psutil.Process()
    digest = hashlib.sha256()
    baseline = process.memory_info().rss
    peak_growth = 0
    stream = client.get_object_stream(seaweedfs_bucket, "big")
    for chunk in stream:
        digest.update(chunk)
        time.sleep(0.03)  # the reader is slower than the network
        peak_growth = max(peak_growth, process.memory_info().rss - baseline)
    assert digest.hexdigest() == expected
    config = client.s3client_config
    readahead = config.readahead_parts * config.part_size
    assert budget.peak <= readahead < LIMIT < OBJECT
    assert peak_growth < LIMIT, (
        f"RSS grew {peak_growth / MiB:.0f} MiB for a {OBJECT // MiB} MiB object"
    )
    assert budget.in_use == 0


def test_many_slow_streams_share_one_budget(
    big_object: tuple[S3Client, str], seaweedfs_bucket: str
) -> None:
    client, expected = big_object
    budget = client._client().budget
    streams = [client.get_object_stream(seaweedfs_bucket, "big") for _ in range(6)]
    digests = [hashlib.sha256() for _ in streams]
    iterators = [iter(stream) for stream in streams]
    finished = [False] * len(streams)
    while not all(finished):  # read all six round-robin, slowly
        for i, iterator in enumerate(iterators):
            if finished[i]:
                continue
            chunk = next(iterator, None)
            if chunk is None:
                finished[i] = True
            else:
                digests[i].update(chunk)
        time.sleep(0.01)
    assert [d.hexdigest() for d in digests] == [expected] * 6
    part = client.s3client_config.part_size
    # The limit holds, plus at most one part per stream (each may always make progress).
    assert budget.peak <= LIMIT + len(streams) * part
    # ...and the streams really did compete for it: more than one stream's read-ahead was out.
    assert budget.peak > client.s3client_config.readahead_parts * part
    assert budget.in_use == 0
