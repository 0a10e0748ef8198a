"""FillableBytes: a bytes appended to in place, then frozen; misuse raises, never corrupts."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from s3torch.client.buffers import IN_PLACE_MIN_SIZE, FillableBytes

BIG = IN_PLACE_MIN_SIZE  # the smallest size built in place (below it a bytearray stands in)
SIZES = [0, 1, 2, 4096, BIG - 1, BIG, 5 * 1024 * 1024 + 3]
TIMEOUT = 60.0


def _writer(data: bytes) -> tuple[list[int], object]:
    """A ``readinto``-like source that hands out ``data`` piece by piece."""
    offset = [0]

    def source(view: memoryview) -> int:
        count = min(len(view), len(data) - offset[0])
        view[:count] = data[offset[0] : offset[0] + count]
        offset[0] += count
        return count

    return offset, source


@pytest.mark.parametrize("size", SIZES)
def test_appended_in_place_then_frozen_into_bytes(size: int) -> None:
    payload = os.urandom(size)
    buffer = FillableBytes(size)
    half = size // 2
    buffer.append(payload[:half])
    assert buffer.filled == half
    assert buffer.read_at(0, size) == payload[:half]
    _, source = _writer(payload[half:])
    assert buffer.append_from(source) == size - half  # type: ignore[arg-type]
    assert buffer.remaining == 0
    frozen = buffer.freeze()
    assert type(frozen) is bytes
    assert frozen == payload
    assert hash(frozen) == hash(payload)  # an ordinary bytes from now on
    assert buffer.freeze() is frozen  # idempotent


def test_a_big_buffer_filled_to_its_size_is_handed_out_without_a_copy() -> None:
    buffer = FillableBytes(BIG * 8)
    buffer.append(b"x" * (BIG * 8))
    tracemalloc.start()
    try:
        frozen = buffer.freeze()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frozen == b"x" * (BIG * 8)
    assert peak < BIG  # a copy would have allocated the whole size again


@pytest.mark.parametrize("size", [10, BIG])
def test_reading_copies_out_only_the_bytes_written(size: int) -> None:
    buffer = FillableBytes(size)
    buffer.append(b"0123456789"[: min(size, 10) - 3])
    filled = buffer.filled
    assert buffer.read_at(0, size) == b"0123456789"[:filled]
    assert buffer.read_at(2, 3) == b"234"
    assert buffer.read_at(filled - 1, 100) == b"0123456789"[filled - 1 : filled]
    assert buffer.read_at(filled, 5) == b""  # unwritten memory is never read
    assert buffer.read_at(size + 5, 5) == b""
    target = bytearray(b"?" * (size + 4))
    assert buffer.readinto_at(1, target) == filled - 1
    assert bytes(target[: filled - 1]) == b"0123456789"[1:filled]
    assert bytes(target[filled - 1 :]) == b"?" * (size + 5 - filled)  # the rest untouched
    assert buffer.readinto_at(filled, target) == 0
    with pytest.raises(ValueError, match="position must be an int >= 0, got -1"):
        buffer.read_at(-1, 2)
    with pytest.raises(ValueError, match="size must be an int >= 0, got -2"):
        buffer.read_at(0, -2)
    with pytest.raises(ValueError, match="position must be an int >= 0"):
        buffer.readinto_at(-1, target)


def _reachable(roots: list[object], depth: int = 4) -> list[object]:
    """Every object reachable from ``roots`` in at most ``depth`` steps."""
    seen: dict[int, object] = {}
    layer = list(roots)
    for _ in range(depth):
        following: list[object] = []
        for obj in layer:
            if id(obj) not in seen:
                seen[id(obj)] = obj
                following.extend(gc.get_referents(obj))
        layer = following
    return list(seen.values())


def test_nothing_handed_out_leads_to_the_unfinished_bytes() -> None:
    """Neither a fill's view nor what reads return reaches the bytes being built.

    A reference to that object would let code see it change after it was
    handed out, or hash it early (``bytes`` caches its hash) and keep a wrong
    hash after it is frozen and handed out as final.
    """
    buffer = FillableBytes(BIG)
    unfinished: list[bytes] = []

    def big_bytes(roots: list[object]) -> list[bytes]:
        return [obj for obj in _reachable(roots) if isinstance(obj, bytes) and len(obj) == BIG]

    def source(view: memoryview) -> int:
        unfinished.extend(big_bytes([view, view.obj]))  # the view, its exporter and beyond
        view[:] = b"a" * len(view)
        return len(view)

    buffer.append_from(source, BIG // 2)
    unfinished.extend(big_bytes([buffer.read_at(0, BIG)]))
    target = bytearray(BIG)
    buffer.readinto_at(0, target)
    assert unfinished == []
    assert bytes(target[: BIG // 2]) == b"a" * (BIG // 2)
    buffer.append(b"b" * (BIG - BIG // 2))
    frozen = buffer.freeze()
    assert len(frozen) == BIG
    assert hash(frozen) == hash(b"a" * (BIG // 2) + b"b" * (BIG - BIG // 2))


def test_tiny_sizes_never_write_into_shared_objects() -> None:
    one = FillableBytes(1)
    one.append(b"A")
    assert one.freeze() == b"A"
    assert b"\x00"[0] == 0
    assert FillableBytes(0).freeze() == b""


@pytest.mark.parametrize("size", [10, BIG])
def test_freezing_a_partly_filled_buffer_returns_only_what_was_written(size: int) -> None:
    buffer = FillableBytes(size)
    buffer.append(b"abc")
    assert buffer.freeze() == b"abc"  # never the uninitialised rest
    assert FillableBytes(size).freeze() == b""


def test_a_limit_bounds_what_a_fill_may_write() -> None:
    buffer = FillableBytes(BIG)
    lengths: list[int] = []

    def source(view: memoryview) -> int:
        lengths.append(len(view))
        view[:] = b"z" * len(view)
        return len(view)

    assert buffer.append_from(source, 100) == 100
    assert buffer.append_from(source, 10 * BIG) == BIG - 100
    assert buffer.append_from(source) == 0  # full: the source is not even called
    assert lengths == [100, BIG - 100]
    assert buffer.freeze() == b"z" * BIG


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_a_bad_limit_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="limit must be None or an int >= 0"):
        FillableBytes(4).append_from(lambda view: 0, limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [-1, 2.0, None])
def test_a_bad_size_is_refused(size: object) -> None:
    with pytest.raises(ValueError, match="size must be an int >= 0"):
        FillableBytes(size)  # type: ignore[arg-type]


def test_too_much_data_is_refused_and_nothing_is_written() -> None:
    buffer = FillableBytes(4)
    buffer.append(b"ab")
    with pytest.raises(ValueError, match=r"3 bytes do not fit .* 2 of 4 bytes left"):
        buffer.append(b"cde")
    assert buffer.freeze() == b"ab"


@pytest.mark.parametrize("count", [-1, 11, None, 2.0])
def test_a_source_that_returns_a_bad_count_spoils_the_buffer(count: object) -> None:
    buffer = FillableBytes(10)
    with pytest.raises(ValueError, match=r"spoiled: a fill returned .*not a count from 0 to 10"):
        buffer.append_from(lambda view: count)  # type: ignore[arg-type,return-value]
    with pytest.raises(BufferError, match="spoiled"):
        buffer.freeze()


@pytest.mark.parametrize("size", [10, BIG])
def test_a_source_that_raises_spoils_the_buffer_and_its_error_propagates(size: int) -> None:
    buffer = FillableBytes(size)

    def source(view: memoryview) -> int:
        view[:2] = b"ab"
        raise ConnectionResetError("the network went away")

    with pytest.raises(ConnectionResetError, match="went away"):
        buffer.append_from(source)
    with pytest.raises(BufferError, match="a fill raised while its view was lent"):
        buffer.append(b"x")
    with pytest.raises(BufferError, match="spoiled"):
        buffer.freeze()
    with pytest.raises(BufferError, match="spoiled"):
        buffer.read_at(0, 2)
    with pytest.raises(BufferError, match="spoiled"):
        buffer.readinto_at(0, bytearray(2))


@pytest.mark.parametrize("keep", ["slice", "view", "exporter", "export"])
def test_a_view_kept_past_its_fill_spoils_the_buffer_and_stays_valid_memory(keep: str) -> None:
    buffer = FillableBytes(BIG)
    kept: list[object] = []

    def source(view: memoryview) -> int:
        view[:] = b"a" * len(view)
        if keep == "slice":
            kept.append(view[10:20])
        elif keep == "view":
            kept.append(memoryview(view))
        elif keep == "exporter":
            kept.append(view.obj)  # the ctypes array itself
        else:
            kept.append(memoryview(view).cast("B", (len(view),)))
        return len(view)

    with pytest.raises(BufferError, match="kept after the fill returned"):
        buffer.append_from(source, 1000)
    with pytest.raises(BufferError, match="spoiled"):
        buffer.freeze()  # so no bytes handed out can ever change through what was kept
    del buffer
    gc.collect()
    for _ in range(100):  # churn the allocator: freed memory would be reused now
        bytes(BIG)
    survivor = memoryview(kept[0]).cast("B")  # type: ignore[arg-type]
    assert bytes(survivor[:10]) == b"aaaaaaaaaa"  # still the live object, not freed memory
    survivor[:10] = b"b" * 10  # writes into memory the view keeps alive
    assert bytes(survivor[:10]) == b"b" * 10


def test_a_second_fill_while_one_is_in_progress_is_refused() -> None:
    buffer = FillableBytes(10)
    errors: list[BaseException] = []

    def source(view: memoryview) -> int:
        try:
            buffer.append(b"x")
        except BufferError as error:
            errors.append(error)
        with pytest.raises(BufferError, match="while a fill is in progress"):
            buffer.freeze()
        view[:1] = b"y"
        return 1

    assert buffer.append_from(source) == 1
    assert [str(error) for error in errors] == [
        "cannot fill a FillableBytes while a fill is in progress"
    ]
    assert buffer.freeze() == b"y"


def test_writes_after_freeze_or_close_are_refused() -> None:
    frozen = FillableBytes(BIG)
    frozen.append(b"abc")
    assert frozen.freeze() == b"abc"
    with pytest.raises(ValueError, match="cannot fill a FillableBytes that is frozen"):
        frozen.append(b"d")
    frozen.close()  # harmless once frozen
    assert frozen.freeze() == b"abc"
    closed = FillableBytes(BIG)
    closed.append(b"abc")
    closed.close()
    closed.close()
    assert closed.closed
    for action in (
        lambda: closed.append(b"d"),
        closed.freeze,
        lambda: closed.read_at(0, 1),
        lambda: closed.readinto_at(0, bytearray(1)),
    ):
        with pytest.raises(ValueError, match="closed"):
            action()


@pytest.mark.parametrize("size", [10, BIG])
def test_close_from_another_thread_during_a_fill_raises_in_the_filler(size: int) -> None:
    buffer = FillableBytes(size)
    inside, closed = threading.Event(), threading.Event()
    outcome: list[BaseException | int] = []

    def source(view: memoryview) -> int:
        inside.set()
        assert closed.wait(TIMEOUT)
        view[:] = b"w" * len(view)  # the memory is still alive: the view keeps it
        return len(view)

    def fill() -> None:
        try:
            outcome.append(buffer.append_from(source))
        except BaseException as error:
            outcome.append(error)

    filler = threading.Thread(target=fill)
    filler.start()
    assert inside.wait(TIMEOUT)
    buffer.close()
    closed.set()
    filler.join(TIMEOUT)
    assert not filler.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ValueError)
    assert "closed while being filled" in str(outcome[0])


def test_threaded_stress_runs_clean_under_dev_mode_and_the_debug_allocator() -> None:
    """Fills racing closes and freezes, views kept past them: no crash, no corruption.

    The debug allocator fills freed memory with a pattern and checks the guard
    bytes around every block: a write into freed memory, or a read of it,
    shows up as a wrong byte or a fatal error.
    """
    script = Path(__file__).with_name("buffers_stress.py")
    environment = {**os.environ, "PYTHONMALLOC": "debug", "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "stress: ok" in result.stdout
