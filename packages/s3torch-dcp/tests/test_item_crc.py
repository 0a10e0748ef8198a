"""check_item, byte by byte: every flipped byte of an item is refused, or is one torch ignores.

Pure logic over bytes in memory (the load through S3 is tested in
test_item_integrity.py).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.utils.serialization

from s3torch.client import S3ChecksumMismatchError
from s3torch.dcp._item_crc import check_item


def _saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _check(data: bytes, *, archive: bool = True, chunks: int = 1) -> None:
    step = max(1, -(-len(data) // chunks))
    views = [memoryview(data)[at : at + step] for at in range(0, len(data), step)]
    check_item(
        views, bucket="b", key="k/__0_0.distcp", item="item 'w' at bytes 0-9", archive=archive
    )


def _same(loaded: Any, expected: Any) -> bool:
    if isinstance(expected, torch.Tensor):
        return (
            isinstance(loaded, torch.Tensor)
            and loaded.dtype == expected.dtype
            and torch.equal(loaded, expected)
        )
    return pickle.dumps(loaded) == pickle.dumps(expected)


@pytest.mark.parametrize(
    "value",
    [torch.arange(64, dtype=torch.float32), {"lr": 0.1, "betas": (0.9, 0.99), "step": 3}],
    ids=["tensor-item", "byte-item"],
)
def test_every_flipped_byte_is_refused_or_changes_nothing_torch_loads(value: Any) -> None:
    data = _saved(value)
    _check(data)  # intact: passes, in one view or several
    _check(data, chunks=7)
    ours = refused_by_torch = ignored = 0
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        try:
            _check(bytes(damaged), chunks=3, archive=not isinstance(value, dict))
        except S3ChecksumMismatchError as error:
            named = ((error.bucket, error.key), "item 'w' at bytes 0-9" in str(error))
            assert named == (("b", "k/__0_0.distcp"), True)
            ours += 1
            continue
        # Not refused: then torch.load refuses it too (zip bookkeeping such as a
        # record's disk number, which only a lenient zip reader accepts), or reads
        # exactly what was saved (a byte torch ignores: a header's time, padding).
        try:
            loaded = torch.load(io.BytesIO(bytes(damaged)), weights_only=True)
        except Exception:
            refused_by_torch += 1
            continue
        assert _same(loaded, value), f"byte {position} flipped loads {loaded!r} unnoticed"
        ignored += 1
    # Every byte of every record's data is ours; torch refuses a few bytes of bookkeeping.
    assert ours > len(data) // 2
    assert refused_by_torch < len(data) // 20


def test_a_mismatch_and_an_unverifiable_archive_say_which() -> None:
    data = bytearray(_saved(torch.ones(1000)))
    data[len(data) // 2] ^= 1
    with pytest.raises(S3ChecksumMismatchError, match=r"has CRC-32 [0-9a-f]{8}, but") as raised:
        _check(bytes(data))
    assert raised.value.code == "ChecksumMismatch"
    assert str(raised.value).startswith("GetObject s3://b/k/__0_0.distcp failed: ChecksumMismatch")
    with pytest.raises(S3ChecksumMismatchError, match="no readable zip directory") as raised:
        _check(_saved(torch.ones(10))[:-30])
    assert raised.value.code == "ChecksumUnverifiable"
    with pytest.raises(S3ChecksumMismatchError, match="cannot be checked"):
        _check(b"not an archive at all")


def test_raw_byte_items_are_left_unchecked_but_archives_among_them_are_not() -> None:
    _check(b"raw bytes a planner of your own wrote", archive=False)  # no CRC to check: passes
    damaged = bytearray(_saved({"step": 1}))
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises(S3ChecksumMismatchError):
        _check(bytes(damaged), archive=False)


@contextmanager
def _without_crcs() -> Iterator[None]:
    config = torch.utils.serialization.config.save
    previous = config.compute_crc32
    config.compute_crc32 = False
    try:
        yield
    finally:
        config.compute_crc32 = previous


def test_an_archive_saved_without_crcs_loads_unchecked() -> None:
    with _without_crcs():
        data = bytearray(_saved(torch.ones(1000)))
    _check(bytes(data))
    data[len(data) // 2] ^= 1
    _check(bytes(data))  # torch recorded zeros: nothing to check against (documented)
