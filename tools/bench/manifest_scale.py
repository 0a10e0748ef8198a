"""Measure a dataset manifest at scale, with synthetic keys (no server).

Usage: uv run python tools/bench/manifest_scale.py [OBJECTS]   (default 1,000,000)

Writes the manifest of OBJECTS synthetic objects (keys like
``train/shard-00042/sample-00420000.jpg``, MD5 ETags, as S3's are: random to a
compressor) with the encoder ``write_manifest`` uses, into memory, then parses
it back with the reader ``from_manifest`` uses, from an in-memory stream read
in the same chunks as an S3 stream. Prints the manifest's size (in all and per
object), the CPU time to encode and compress, to decompress and parse, and the
peak memory the parse allocates (tracemalloc, in a second pass): it streams,
so it does not grow with the manifest.
"""

from __future__ import annotations

import io
import sys
import time
import tracemalloc
import zlib
from datetime import datetime, timezone
from hashlib import md5

from s3torch.client import ObjectInfo
from s3torch.datasets._manifest import (
    GZIP_WBITS,
    _lines,
    _objects,
    _parse_header,
    end_line,
    header_line,
    object_line,
)
from s3torch.datasets._manifest_writer import _LEVEL

BUCKET = "my-bucket"
PAGE = 1000


def _write(count: int) -> tuple[bytes, float]:
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    out = io.BytesIO()
    infos = [
        ObjectInfo(BUCKET, key, 100_000 + i % 5000, f'"{md5(key.encode()).hexdigest()}"')
        for i in range(count)
        for key in (f"train/shard-{i // 10000:05d}/sample-{i:08d}.jpg",)
    ]
    started = time.process_time()
    out.write(packer.compress(header_line(f"s3://{BUCKET}/train/", datetime.now(timezone.utc))))
    for first in range(0, count, PAGE):
        out.write(packer.compress(b"".join(object_line(i) for i in infos[first : first + PAGE])))
    out.write(packer.compress(end_line(count)) + packer.flush())
    return out.getvalue(), time.process_time() - started


def _parse(body: bytes) -> int:
    stream = io.BytesIO(body)
    uri = f"s3://{BUCKET}/manifest.jsonl.gz"
    lines = _lines(uri, stream)
    header = _parse_header(uri, next(lines))
    return sum(1 for _ in _objects(uri, header.bucket, stream, lines))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    body, write_s = _write(count)
    started = time.process_time()
    parsed = _parse(body)
    parse_s = time.process_time() - started
    assert parsed == count, (parsed, count)
    tracemalloc.start()
    _parse(body)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    text = zlib.decompress(body, GZIP_WBITS)
    print(f"objects: {count:,}")
    print(f"manifest: {len(body):,} bytes ({len(body) / count:.1f} per object)")
    print(f"uncompressed: {len(text):,} bytes ({len(text) / count:.1f} per object)")
    print(f"encode + compress: {write_s:.2f} CPU s ({write_s / count * 1e6:.2f} us per object)")
    print(f"decompress + parse: {parse_s:.2f} CPU s ({parse_s / count * 1e6:.2f} us per object)")
    print(f"parse peak allocation: {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
