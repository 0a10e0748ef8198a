"""Serial against parallel listing of a large prefix: on the wire, and with simulated pages.

Usage:
    uv run python tools/bench/parallel_listing.py wire [KEYS [DELAY_MS]]
    uv run python tools/bench/parallel_listing.py sim [COUNTS [DELAY_MS [LAYOUT]]]

``wire`` (default 200,000 keys, 10 ms): starts SeaweedFS (tools/locals3), fills a
bucket with KEYS empty objects (once per run, not measured), and puts a
LatencyProxy of DELAY_MS per response in front of it. Then, each in a fresh
process: ``S3Client.list_objects`` (the serial, pipelined walk) and
``S3Client.list_objects_parallel`` with its defaults. Prints wall seconds, page
requests, client CPU seconds and peak RSS growth of each.

``sim`` (default counts 10000,100000,1000000, 10 ms, layout ``shards``): no
server. A fake page source answers each page request DELAY_MS later from a
thread pool, with keys computed from their index (so the key set costs no
memory); the listing under test is :class:`ParallelListing` with one walker
(serial: one request at a time, two pages ahead, as ``list_objects``) and with
12 (``list_objects_parallel``'s default on a default client). Prints wall
seconds, requests and peak RSS growth for each count. LAYOUT ``shards`` is
``train/shard-00042/sample-00420000.jpg`` (10,000 keys a "directory", as in
shared_listing_scale.py), ``flat`` is ``sample-00420000``.

Each case runs in its own process, so its CPU time and peak RSS are its own.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BUCKET = "listing-bench"
PREFIX = "train/"


def _shards(i: int) -> str:
    return f"train/shard-{i // 10000:05d}/sample-{i:08d}.jpg"


def _flat(i: int) -> str:
    return f"train/sample-{i:08d}"


LAYOUTS: dict[str, Callable[[int], str]] = {"shards": _shards, "flat": _flat}


class SimulatedPages:
    """``count`` keys ``key_of(0) < key_of(1) < ...``, each page answered ``delay_s`` later."""

    def __init__(self, count: int, key_of: Callable[[int], str], delay_s: float) -> None:
        self.bucket = BUCKET
        self.prefix = PREFIX
        self.count = count
        self.key_of = key_of
        self.delay_s = delay_s
        self.pool = ThreadPoolExecutor(64)
        self.requests = 0
        self.lock = threading.Lock()

    def _after(self, key: str) -> int:
        low, high = 0, self.count
        while low < high:  # the first index whose key is > key
            middle = (low + high) // 2
            if self.key_of(middle) <= key:
                low = middle + 1
            else:
                high = middle
        return low

    def _directories(self, start_after: str | None, max_keys: int) -> tuple[str, ...]:
        """The "directories" (delimiter ``/``) after ``start_after``, as S3 rolls them up."""
        index = 0 if start_after is None else self._after(start_after)
        found: list[str] = []
        while index < self.count and len(found) < max_keys:
            rest = self.key_of(index)[len(PREFIX) :]
            if "/" not in rest:
                break  # keys, not directories, from here (the layouts never mix them)
            found.append(PREFIX + rest[: rest.index("/") + 1])
            index = self._after(found[-1] + "\U0010ffff")
        return tuple(found)

    def request(
        self,
        start_after: str | None,
        token: str | None,
        max_keys: int,
        done: Any,
        delimiter: str | None = None,
    ) -> Any:
        from s3torch.client import ListObjectsPage, ObjectInfo

        with self.lock:
            self.requests += 1

        def answer() -> None:
            time.sleep(self.delay_s)
            if delimiter is not None:
                done(ListObjectsPage((), self._directories(start_after, max_keys)), None, None)
                return
            if token is not None:
                first = int(token)
            elif start_after is None:
                first = 0
            else:
                first = self._after(start_after)
            last = min(first + max_keys, self.count)
            objects = tuple(
                ObjectInfo(BUCKET, self.key_of(i), 1000, '"etag"') for i in range(first, last)
            )
            done(ListObjectsPage(objects), str(last) if last < self.count else None, None)

        return self.pool.submit(answer)  # cancel() drops it if not started


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sim_case(count: int, delay_s: float, layout: str, concurrency: int) -> None:
    from s3torch.client import ParallelListing

    source = SimulatedPages(count, LAYOUTS[layout], delay_s)
    base = _rss_mib()
    began, cpu = time.perf_counter(), time.process_time()
    listing = ParallelListing(
        source,
        concurrency=concurrency,
        pages_ahead=2 * concurrency,
        max_keys=1000,
        first_page_keys=100,
    )
    seen = 0
    previous = ""
    first_page_s = 0.0
    for page in listing:
        if not seen:
            first_page_s = time.perf_counter() - began
        assert page.objects[0].key > previous
        previous = page.objects[-1].key
        seen += len(page.objects)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert seen == count, (seen, count)
    source.pool.shutdown()
    name = "serial" if concurrency == 1 else f"parallel ({concurrency})"
    print(
        f"| {count:,} | {name} | {elapsed:.2f} | {first_page_s * 1000:.0f} | {listing.requests:,} "
        f"| {cpu:.2f} | {_rss_mib() - base:.0f} |",
        flush=True,
    )


def _wire_case(endpoint: str, mode: str, count: int) -> None:
    from s3torch.client import S3Client

    client = S3Client("us-east-1", endpoint=endpoint)
    list(client.list_objects(BUCKET, "no-such-prefix/"))  # connect and sign once, unmeasured
    base = _rss_mib()
    began, cpu = time.perf_counter(), time.process_time()
    seen = requests = 0
    first_page_s = 0.0
    if mode == "serial":
        listing: Any = client.list_objects(BUCKET, PREFIX, first_page_keys=100)
    else:
        listing = client.list_objects_parallel(BUCKET, PREFIX, first_page_keys=100)
    with listing:
        for page in listing:
            if not seen:
                first_page_s = time.perf_counter() - began
            seen += len(page.objects)
            requests += 1
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    if mode != "serial":
        requests = listing.requests
    assert seen == count, (seen, count)
    print(
        f"| {mode} | {elapsed:.2f} | {first_page_s * 1000:.0f} | {requests:,} | {cpu:.2f} "
        f"| {_rss_mib() - base:.0f} |",
        flush=True,
    )


def _fill(endpoint: str, count: int) -> None:
    from s3torch.client import S3Client

    client = S3Client("us-east-1", endpoint=endpoint)

    def put(i: int) -> None:
        with client.put_object(BUCKET, _shards(i)) as writer:
            writer.write(b"")

    began = time.perf_counter()
    with ThreadPoolExecutor(64) as pool:
        for done, _ in enumerate(pool.map(put, range(count)), 1):
            if done % 20000 == 0:
                print(f"  filled {done:,} in {time.perf_counter() - began:.0f} s", flush=True)


def _wire(count: int, delay_ms: float) -> None:
    import boto3

    from locals3 import ACCESS_KEY, REGION, SECRET_KEY, LatencyProxy, SeaweedFSServer

    os.environ.update(_credentials())
    with SeaweedFSServer() as server:
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=BUCKET)
        print(f"filling s3://{BUCKET}/{PREFIX} with {count:,} empty objects", flush=True)
        _fill(server.endpoint, count)
        with LatencyProxy(server.port, delay_ms / 1000) as proxy:
            print(f"\n{count:,} keys, {delay_ms:g} ms per response (LatencyProxy), SeaweedFS\n")
            print(
                "| listing | seconds | first page (ms) | requests | client CPU s "
                "| RSS growth (MiB) |"
            )
            print("| --- | --- | --- | --- | --- | --- |")
            for mode in ("serial", "parallel", "serial", "parallel"):
                subprocess.run(
                    [sys.executable, __file__, "wire-case", proxy.endpoint, mode, str(count)],
                    check=True,
                    env=_credentials(),
                )


def _credentials() -> dict[str, str]:
    from locals3 import ACCESS_KEY, SECRET_KEY

    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return env


def main() -> None:
    args = sys.argv[1:]
    mode = args[0] if args else "sim"
    if mode == "sim-case":
        _sim_case(int(args[1]), float(args[2]), args[3], int(args[4]))
    elif mode == "wire-case":
        _wire_case(args[1], args[2], int(args[3]))
    elif mode == "wire":
        count = int(args[1]) if len(args) > 1 else 200_000
        _wire(count, float(args[2]) if len(args) > 2 else 10.0)
    elif mode == "sim":
        counts = args[1] if len(args) > 1 else "10000,100000,1000000"
        delay_ms = args[2] if len(args) > 2 else "10"
        layout = args[3] if len(args) > 3 else "shards"
        print(f"simulated pages, {delay_ms} ms each, layout {layout}\n")
        print(
            "| keys | listing | seconds | first page (ms) | requests | CPU s | RSS growth (MiB) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for keys in counts.split(","):
            for concurrency in ("1", "12"):
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "sim-case",
                        keys,
                        str(float(delay_ms) / 1000),
                        layout,
                        concurrency,
                    ],
                    check=True,
                )
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
