"""Stress FillableBytes from threads (test_buffers.py runs it: -X dev, PYTHONMALLOC=debug).

Each round, a filler thread appends a known pattern chunk by chunk (some
sources keep a slice of their view, some raise), while a closer and a freezer
race it. Every outcome must be a result or a ValueError/BufferError; every
frozen bytes must hold exactly the pattern and never change afterwards; every
view kept past its fill, written to after its buffer was dropped and the
allocator churned, must still read back what was written (freed memory would
not). Exits 0 and prints "stress: ok" when all holds.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
from typing import Any

from s3torch.client.buffers import IN_PLACE_MIN_SIZE, FillableBytes

ROUNDS = 300
TIMEOUT = 60.0
CHUNK = 16 * 1024


def pattern(offset: int, length: int) -> bytes:
    return bytes((offset + index) % 251 for index in range(length))


PATTERN = pattern(0, 2 * 1024 * 1024)
failures: list[str] = []


def hook(args: Any) -> None:
    failures.append(f"unraisable or thread error: {args!r}")


def one_round(
    rng: random.Random,
    kept: list[tuple[memoryview, bytes]],
    frozen: list[tuple[bytes, bytes]],
) -> None:
    size = rng.choice([IN_PLACE_MIN_SIZE, IN_PLACE_MIN_SIZE + 7, 1024 * 1024, 1000])
    buffer = FillableBytes(size)
    chunks = -(-size // CHUNK)
    go = threading.Barrier(3, timeout=TIMEOUT)
    reached = threading.Event()  # the filler got as far as the race is meant to start
    race_at = rng.randrange(0, chunks + 1)
    keep_at = rng.randrange(0, chunks) if rng.random() < 0.3 else -1
    raise_at = rng.randrange(0, chunks) if rng.random() < 0.1 else -1
    closes = rng.random() < 0.5
    outcomes: list[object] = []

    def source(view: memoryview) -> int:
        start = buffer.filled
        view[:] = PATTERN[start : start + len(view)]
        chunk = start // CHUNK
        if chunk == race_at:
            reached.set()
        if chunk == keep_at:
            kept.append((view[: min(len(view), 64)], PATTERN[start : start + min(len(view), 64)]))
        if chunk == raise_at:
            raise ConnectionError("injected")
        return len(view)

    def fill() -> None:
        go.wait()
        try:
            while buffer.append_from(source, CHUNK):
                pass
            outcomes.append("filled")
        except (ValueError, BufferError, ConnectionError) as error:
            outcomes.append(type(error).__name__)
        finally:
            reached.set()

    def close() -> None:
        go.wait()
        if closes and reached.wait(TIMEOUT):
            buffer.close()

    def freeze() -> None:
        go.wait()
        reached.wait(TIMEOUT)
        for _ in range(rng.randrange(1, 2000)):
            try:
                data = buffer.freeze()
            except (ValueError, BufferError):
                continue
            if data != PATTERN[: len(data)]:
                failures.append(f"frozen bytes of size {len(data)} hold the wrong bytes")
            frozen.append((data, bytes(bytearray(data))))
            return

    threads = [threading.Thread(target=target) for target in (fill, close, freeze)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        if thread.is_alive():
            failures.append("a thread did not finish")
    if len(outcomes) != 1:
        failures.append(f"the filler ended with {outcomes!r}")


def main() -> int:
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings
    threading.excepthook = hook
    sys.unraisablehook = hook
    rng = random.Random(20261201)
    kept: list[tuple[memoryview, bytes]] = []
    frozen: list[tuple[bytes, bytes]] = []
    for _ in range(ROUNDS):
        one_round(rng, kept, frozen)
    gc.collect()
    churn = [bytes(IN_PLACE_MIN_SIZE) for _ in range(64)]  # reuse whatever was freed
    del churn
    for index, (view, expected) in enumerate(kept):  # every kept view still sees live memory
        if bytes(view) != expected:
            failures.append(f"kept view {index} no longer holds what was written before")
        view[:] = bytes([index % 256]) * len(view)
    for index, (view, _) in enumerate(kept):
        if bytes(view) != bytes([index % 256]) * len(view):
            failures.append(f"kept view {index} lost what was written into it")
    for data, snapshot in frozen:  # nothing written after freezing reached a frozen bytes
        if data != snapshot:
            failures.append("a frozen bytes changed after it was handed out")
    if failures:
        print("\n".join(failures[:20]))
        return 1
    sizes = sorted({len(data) for data, _ in frozen})
    print(
        f"stress: ok ({ROUNDS} rounds, {len(kept)} views kept, {len(frozen)} frozen, "
        f"{len(sizes)} distinct frozen sizes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
