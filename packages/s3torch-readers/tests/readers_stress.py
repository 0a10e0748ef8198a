"""Readers closed by another thread mid-read (test_races.py runs it: -X dev, PYTHONMALLOC=debug).

Usage: ``readers_stress.py ENDPOINT REGION BUCKET KEY SIZE [ROUNDS]`` (the
object's bytes are ``pattern(SIZE)``). Each round, a reader thread reads the
object (every reader kind, reads of random sizes, ``readinto``, seeks) and
keeps everything it got, while a closer thread closes the reader after a
random number of reads. Every read must return the right bytes or raise a
ValueError, BufferError or S3Exception; no thread may hang; after all rounds,
with the allocator churned, everything kept still holds the right bytes (a
result aliasing freed or reused memory would not). Prints "stress: ok".
"""

from __future__ import annotations

import gc
import random
import sys
import threading
from typing import Any

from s3torch.client import S3Client, S3ClientConfig, S3Exception
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

TIMEOUT = 120.0
MiB = 1024 * 1024
failures: list[str] = []


def pattern(size: int) -> bytes:
    block = bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


def hook(args: Any) -> None:
    failures.append(f"unraisable or thread error: {args!r}")


def constructors(uri: str, size: int) -> dict[str, Any]:
    dcp = S3ReaderConstructor.dcp_optimized()
    third = size // 3
    dcp.set_item_ranges({uri: [ItemRange(0, third), ItemRange(third, 2 * third)]})
    return {
        "sequential": S3ReaderConstructor.sequential(),
        "range_based": S3ReaderConstructor.range_based(buffer_size=256 * 1024),
        "range_based_unbuffered": S3ReaderConstructor.range_based(buffer_size=0),
        "dcp_optimized": dcp,
    }


def one_round(
    rng: random.Random,
    client: S3Client,
    bucket: str,
    key: str,
    data: bytes,
    kind: str,
    constructor: Any,
    kept: list[tuple[str, Any, bytes]],
) -> str:
    reader = get_object(client, bucket, key, reader_constructor=constructor)
    progress = threading.Semaphore(0)
    close_after = rng.randrange(0, 8) if rng.random() < 0.7 else None  # None: never
    outcome: list[str] = []
    third = len(data) // 3

    def read() -> None:
        try:
            for _ in range(12):
                position = reader.tell()
                if kind == "dcp_optimized":
                    length = rng.randrange(1, 512 * 1024)
                    if position >= 2 * third:
                        break
                    length = min(length, (third if position < third else 2 * third) - position)
                else:
                    length = rng.randrange(1, 2 * MiB)
                how = rng.random()
                if how < 0.5:
                    chunk: Any = reader.read(length)
                    kept.append(
                        (f"{kind} read", memoryview(chunk), data[position : position + len(chunk)])
                    )
                else:
                    target = bytearray(length)
                    count = reader.readinto(target)
                    kept.append(
                        (f"{kind} readinto", target[:count], data[position : position + count])
                    )
                if kind != "dcp_optimized" and rng.random() < 0.2:
                    reader.seek(rng.randrange(0, len(data)))
                progress.release()
            outcome.append("done")
        except (ValueError, BufferError, S3Exception) as error:
            outcome.append(type(error).__name__)
        finally:
            progress.release()

    def close() -> None:
        if close_after is None:
            return
        for _ in range(close_after):
            if not progress.acquire(timeout=TIMEOUT):
                failures.append(f"{kind}: the reader made no progress")
                return
        reader.close()

    threads = [threading.Thread(target=read), threading.Thread(target=close)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        if thread.is_alive():
            failures.append(f"{kind}: a thread did not finish")
    reader.close()
    return outcome[0] if outcome else "none"


def main() -> int:
    endpoint, region, bucket, key, size = sys.argv[1:6]
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 40
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings
    threading.excepthook = hook
    sys.unraisablehook = hook
    data = pattern(int(size))
    rng = random.Random(20261201)
    kept: list[tuple[str, Any, bytes]] = []
    outcomes: dict[str, int] = {}
    with S3Client(
        region, endpoint=endpoint, s3client_config=S3ClientConfig(part_size=5 * MiB)
    ) as client:
        kinds = constructors(f"s3://{bucket}/{key}", len(data))
        for index in range(rounds):
            kind = list(kinds)[index % len(kinds)]
            result = one_round(rng, client, bucket, key, data, kind, kinds[kind], kept)
            outcomes[result] = outcomes.get(result, 0) + 1
    gc.collect()
    churn = [bytes(256 * 1024) for _ in range(64)]  # reuse whatever was freed
    del churn
    for index, (how, got, expected) in enumerate(kept):
        if bytes(got) != expected:
            failures.append(
                f"result {index} ({how}, {len(expected)} bytes) does not hold its bytes"
            )
    if failures:
        print("\n".join(failures[:20]))
        return 1
    print(f"stress: ok ({rounds} rounds, {len(kept)} results kept, outcomes {outcomes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
