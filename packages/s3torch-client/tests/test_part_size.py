"""A huge part size costs what the object needs, not what the part size says.

``part_size=5 GiB`` is legal (S3's largest part), and a process may have far
less address space than that. Each request's buffers are sized by the bytes it
can return: the first GET of an object of unknown size asks a bounded first
range, and later ones never ask past the object's end. Run in a child process
under a 3 GiB address-space limit (``RLIMIT_AS``): before this, the first GET
of a 5-byte object made the CRT reserve 5 GiB and the process died (SIGABRT).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

_CHILD = textwrap.dedent(
    """
    import hashlib, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from s3torch.client import S3Client, S3ClientConfig
    endpoint, bucket, digest = sys.argv[1:]
    config = S3ClientConfig(part_size=5 << 30, memory_limit=10 << 30)
    client = S3Client("us-east-1", endpoint=endpoint, s3client_config=config)
    assert client.get_object_stream(bucket, "tiny").read() == b"hello"
    assert client.get_object_stream(bucket, "tiny", start=1, end=3).read() == b"el"
    info = client.head_object(bucket, "tiny")
    assert client.get_object_stream(bucket, "tiny", object_info=info).read() == b"hello"
    body = client.get_object_stream(bucket, "mid").read()
    assert hashlib.sha256(body).hexdigest() == digest, "mid differs"
    with client.put_object(bucket, "written") as writer:
        writer.write(b"x" * 1000)
    assert client.get_object_stream(bucket, "written").read() == b"x" * 1000
    print("ok")
    """
)


def test_a_5_gib_part_size_reads_and_writes_small_objects_in_little_memory(
    s3_endpoint: str, boto3_s3: Any, bucket: str
) -> None:
    import hashlib

    boto3_s3.put_object(Bucket=bucket, Key="tiny", Body=b"hello")
    mid = os.urandom(20 * 1024 * 1024)  # larger than the first range
    boto3_s3.put_object(Bucket=bucket, Key="mid", Body=mid)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, s3_endpoint, bucket, hashlib.sha256(mid).hexdigest()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "ok"
