"""FillableBytes: a bytes object written once in place, then immutable."""

from __future__ import annotations

import os

import pytest

from s3torch.client._buffers import FillableBytes


@pytest.mark.parametrize("size", [0, 1, 2, 4096, 5 * 1024 * 1024 + 3])
def test_filled_in_place_then_frozen_into_bytes(size: int) -> None:
    payload = os.urandom(size)
    buffer = FillableBytes(size)
    assert buffer.view is not None
    assert len(buffer.view) == size
    half = size // 2
    buffer.view[:half] = payload[:half]
    buffer.view[half:] = payload[half:]
    frozen = buffer.freeze()
    assert type(frozen) is bytes
    assert frozen == payload
    assert buffer.view is None
    assert hash(frozen) == hash(payload)  # an ordinary bytes from now on


def test_tiny_sizes_never_write_into_shared_objects() -> None:
    one = FillableBytes(1)
    assert isinstance(one.data, bytearray)  # sizes 0 and 1 are CPython singletons' sizes
    assert one.view is not None
    one.view[0] = 0x41
    assert one.freeze() == b"A"
    assert b"\x00"[0] == 0
    assert FillableBytes(0).freeze() == b""
