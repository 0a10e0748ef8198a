"""copy_into: the bytes land where they should, however the copy is shared among threads."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from s3torch.checkpoint import _copy
from s3torch.checkpoint._copy import PARALLEL_MIN_BYTES, copy_into, copy_threads

MiB = 1024 * 1024


def pieces_of(data: bytes, sizes: list[int]) -> list[tuple[int, memoryview]]:
    """``data`` cut into views of ``sizes`` (the last takes the rest), with their offsets."""
    view = memoryview(data)
    pieces, offset = [], 0
    for size in [*sizes, len(data)]:
        piece = view[offset : offset + size]
        if len(piece):
            pieces.append((offset, piece))
        offset += len(piece)
    return pieces


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 7, PARALLEL_MIN_BYTES, 37 * MiB + 3])
def test_every_byte_lands_in_place(size: int) -> None:
    data = os.urandom(size)
    target = bytearray(size)
    copy_into(memoryview(target), pieces_of(data, [5, MiB + 1, 6 * MiB - 2, 4 * MiB]))
    assert target == data


def test_a_large_copy_is_shared_among_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_copy, "copy_threads", lambda: 4)
    seen: set[str] = set()
    copy_share = _copy._copy_share

    def recording(destination: Any, share: Any, group: Any) -> None:
        seen.add(threading.current_thread().name)  # names are never reused
        copy_share(destination, share, group)

    monkeypatch.setattr(_copy, "_copy_share", recording)
    data = os.urandom(32 * MiB + 11)
    target = bytearray(len(data))
    copy_into(memoryview(target), pieces_of(data, [8 * MiB + 1, 20 * MiB]))
    assert target == data
    assert len(seen) == 4


def test_slices_are_near_equal_in_order_and_cover_everything() -> None:
    data = os.urandom(10 * MiB + 5)
    shares = _copy._split(pieces_of(data, [3, 7 * MiB, 2]), 3)
    sizes = [sum(len(piece) for _, piece in share) for share in shares]
    assert len(shares) == 3
    assert max(sizes) - min(sizes) <= 2
    flat = [slice_ for share in shares for slice_ in share]
    assert [offset for offset, _ in flat] == sorted(offset for offset, _ in flat)
    assert b"".join(bytes(piece) for _, piece in flat) == data


def test_a_source_outside_the_target_raises_and_writes_nothing_past_it() -> None:
    target = bytearray(16 * MiB + 8)
    guarded = memoryview(target)[: 16 * MiB]
    past_the_end = (12 * MiB, memoryview(b"x" * (8 * MiB)))
    with pytest.raises(ValueError, match="broadcast"):
        copy_into(guarded, [(0, memoryview(bytes(8 * MiB))), past_the_end])
    assert target[16 * MiB :] == bytes(8)


def test_a_read_only_target_is_refused() -> None:
    with pytest.raises(ValueError, match="read-only"):
        copy_into(memoryview(bytes(10)), [(0, memoryview(b"abc"))])


def test_threads_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert copy_threads() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert copy_threads() == _copy.MAX_THREADS


def _copy_threads_alive(grace: float = 0.0) -> list[str]:
    """Copy threads still alive after ``grace`` seconds.

    A thread whose start() was interrupted may begin after the copy returned:
    it sees the stop and ends without copying anything, in microseconds.
    """
    deadline = time.monotonic() + grace
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("s3torch-copy")]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.001)


def test_an_interrupted_copy_stops_its_threads_before_the_interrupt_gets_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended: list[str] = []
    copy_share = _copy._copy_share

    def interrupted_here(destination: Any, share: Any, group: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt
        try:
            copy_share(destination, share, group)
        finally:
            ended.append(threading.current_thread().name)

    monkeypatch.setattr(_copy, "_copy_share", interrupted_here)
    data = os.urandom(64 * MiB)
    target = bytearray(len(data))
    with pytest.raises(KeyboardInterrupt):
        copy_into(memoryview(target), pieces_of(data, []), threads=4)
    assert len(ended) == 3  # every worker had ended when the interrupt got out
    assert _copy_threads_alive() == []


def test_ctrl_c_at_any_moment_of_a_copy_leaves_no_thread_writing() -> None:
    """Real SIGINTs at spread-out moments: KeyboardInterrupt, then the target never changes."""
    data = os.urandom(256 * MiB)
    sources = pieces_of(data, [8 * MiB] * 31)
    interrupted = 0
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.04):
        target = bytearray(len(data))
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            copy_into(memoryview(target), sources, threads=8)
            timer.join()  # the copy won: the interrupt may still come; take it here
            time.sleep(0.2)
        except KeyboardInterrupt:
            interrupted += 1
            snapshot = bytes(target)
            time.sleep(0.05)
            assert bytes(target) == snapshot  # nothing writes into it any more
            assert _copy_threads_alive(grace=1.0) == []
        finally:
            timer.join()
    assert interrupted >= 3


def test_a_thread_that_cannot_start_stops_the_copy_after_the_started_ones_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended: list[str] = []
    copy_share = _copy._copy_share
    real_start = threading.Thread.start
    starts = 0

    def recording(destination: Any, share: Any, group: Any) -> None:
        try:
            copy_share(destination, share, group)
        finally:
            ended.append(threading.current_thread().name)

    def start_twice_then_fail(thread: threading.Thread) -> None:
        nonlocal starts
        starts += 1
        if starts > 2:
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(_copy, "_copy_share", recording)
    monkeypatch.setattr(threading.Thread, "start", start_twice_then_fail)
    data = os.urandom(16 * MiB)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        copy_into(memoryview(bytearray(len(data))), pieces_of(data, []), threads=4)
    assert len(ended) == 2  # both started workers had ended when the error got out
    assert _copy_threads_alive() == []
