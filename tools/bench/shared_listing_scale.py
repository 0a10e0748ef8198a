"""Measure the shared listing file at scale, with synthetic keys (no server).

Usage: uv run python tools/bench/shared_listing_scale.py [OBJECTS [PHASES]]

PHASES: comma-separated, default all (``generate,write,read,read/8,parse``).

Each phase runs in a fresh process, so its peak RSS is its own:

- ``generate``: make the synthetic pages alone (what the listing itself hands over);
- ``write``: generate and write them to the file (the writer's cost is this less ``generate``);
- ``read``: read the finished file, decoding every object (a whole-listing shuffle);
- ``read/8``: read it keeping one object in 8 (a worker of 8, ordered or streaming shuffle);
- ``parse``: parse ListObjectsV2 XML pages of 1,000 keys with the client's parser (what
  each worker would pay to list for itself instead).

Prints one row per phase: wall and CPU seconds, peak RSS growth over the process after
imports (MiB), and the file's size.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from hashlib import md5
from pathlib import Path
from typing import Any

PAGE = 1000
BUCKET = "my-bucket"


def _pages(count: int) -> Iterator[list[object]]:
    from s3torch.client import ObjectInfo
    from s3torch.datasets._source import DatasetObject

    start = datetime(2026, 11, 23, 12, 30, tzinfo=timezone.utc)
    for first in range(0, count, PAGE):
        # One date a page: generating is not what is measured, so it is kept cheap.
        # The ETags are MD5s, as S3's are: random to a compressor.
        modified = start + timedelta(seconds=first // PAGE)
        yield [
            DatasetObject(
                BUCKET,
                key,
                ObjectInfo(
                    BUCKET, key, 100_000 + i % 5000, f'"{md5(key.encode()).hexdigest()}"', modified
                ),
            )
            for i in range(first, min(first + PAGE, count))
            for key in (f"train/shard-{i // 10000:05d}/sample-{i:08d}.jpg",)
        ]


def _xml_pages(count: int) -> Iterator[bytes]:
    for page in _pages(count):
        entries = "".join(
            f"<Contents><Key>{obj.key}</Key><LastModified>"  # type: ignore[attr-defined]
            f"{obj.info.last_modified.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"  # type: ignore[attr-defined]
            f"<ETag>&quot;{obj.info.etag[1:-1]}&quot;</ETag><Size>{obj.info.size}</Size>"  # type: ignore[attr-defined]
            "</Contents>"
            for obj in page
        )
        yield (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>my-bucket</Name>'
            f"<Prefix></Prefix><KeyCount>{len(page)}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<IsTruncated>true</IsTruncated>{entries}<NextContinuationToken>t"
            "</NextContinuationToken></ListBucketResult>"
        ).encode()


def _phase(name: str, count: int, directory: Path) -> None:
    from s3torch.client._xml import parse_list_objects
    from s3torch.datasets._shared_listing import SharedListing, _write_pages

    listing = SharedListing(directory, "scale", BUCKET)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began, cpu = time.perf_counter(), time.process_time()
    seen = 0
    if name == "generate":
        seen = sum(len(page) for page in _pages(count))
    elif name == "write":
        writer = listing._claim(listing.path("0"))
        assert writer is not None
        _write_pages(writer, listing.path("0"), lambda: _pages(count))  # type: ignore[arg-type,return-value]
        seen = count
    elif name.startswith("read"):
        every = int(name.partition("/")[2] or 1)
        seen = sum(1 for _ in listing.objects(_fail, keep=lambda p: p % every == 0))
    elif name == "parse":
        seen = sum(len(parse_list_objects(body, BUCKET)[0].objects) for body in _xml_pages(count))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    size = listing.path("0").stat().st_size if listing.path("0").exists() else 0
    print(
        f"| {name} | {seen:,} | {elapsed:.1f} | {cpu:.1f} | {grown:.0f} | {size / 1e6:.0f} MB |",
        flush=True,
    )


def _fail() -> Iterator[list[Any]]:
    raise AssertionError("the file should be complete: nothing to list")


def main() -> None:
    if len(sys.argv) == 4:  # one phase, in its own process
        _phase(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    with tempfile.TemporaryDirectory(dir=os.environ.get("S3TORCH_LISTING_DIR")) as directory:
        print("| phase | objects | seconds | CPU seconds | peak RSS growth (MiB) | file |")
        print("| --- | --- | --- | --- | --- | --- |")
        phases = sys.argv[2] if len(sys.argv) > 2 else "generate,write,read,read/8,parse"
        for name in phases.split(","):
            subprocess.run([sys.executable, __file__, name, str(count), directory], check=True)


if __name__ == "__main__":
    main()
