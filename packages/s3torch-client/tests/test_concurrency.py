"""Many requests in flight from one thread; one client shared by many threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from locals3 import FaultProxy
from s3torch.client import S3Client


def test_one_thread_keeps_sixteen_gets_in_flight(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    bodies = {f"obj{i:02d}": os.urandom(1000 + i) for i in range(16)}
    for key, body in bodies.items():
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)
    client = make_client(endpoint=fault_proxy.endpoint)
    # The proxy answers nothing until 16 requests wait at once: if starting a
    # GET blocked until it finished, the 16 would never be in flight together.
    fault_proxy.hold_until_concurrent(16, timeout=20)
    streams = [client.get_object_stream(bucket, key) for key in bodies]
    assert [stream.read() for stream in streams] == list(bodies.values())
    assert fault_proxy.hold_reached
    assert fault_proxy.max_concurrent >= 16


def test_one_client_serves_many_threads(client: S3Client, boto3_s3: Any, bucket: str) -> None:
    threads = 8
    together = threading.Barrier(threads, timeout=60)  # every round: 8 threads at once
    workers: set[int] = set()

    def work(worker: int) -> bytes:
        workers.add(threading.get_ident())
        together.wait()
        body = os.urandom(10_000 + worker)
        with client.put_object(bucket, f"t{worker}") as writer:
            writer.write(body)
        assert client.head_object(bucket, f"t{worker}").size == len(body)
        return client.get_object_stream(bucket, f"t{worker}").read()

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(32)))
    assert results == [client.get_object_stream(bucket, f"t{i}").read() for i in range(32)]
    assert len(workers) == threads  # eight threads used the one client at the same time
    assert threading.get_ident() not in workers
    listed = [o.key for page in client.list_objects(bucket) for o in page.objects]
    assert sorted(listed) == sorted(f"t{i}" for i in range(32))


def test_the_crt_client_is_created_once_per_process_and_lazily(client: S3Client) -> None:
    assert client._crt is None  # nothing is built until the first request
    first = client._client()
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda _: id(client._client()), range(64)))
    assert seen == {id(first)}
