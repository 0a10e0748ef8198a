"""copy_stored_tensor on damaged items: it copies (True) or declines (False), and never raises.

Whatever the bytes, it writes nothing outside the destination tensor (checked
with guard bytes around it), and nothing at all unless it returns True: the
caller then loads the item with torch.load, which reports the damage.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3torch.dcp._tensor_item import copy_stored_tensor

GUARD = 64  # bytes before and after the destination

ORIGINALS = {
    "float32": torch.arange(300, dtype=torch.float32).reshape(20, 15),
    "int64": torch.arange(-40, 40, dtype=torch.int64),
    "bfloat16": torch.arange(64, dtype=torch.bfloat16).reshape(8, 8),
    "bool": torch.arange(33) % 2 == 0,
    "scalar": torch.tensor(2.5, dtype=torch.float64),
}


def saved(value: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


ITEMS = {name: saved(value) for name, value in ORIGINALS.items()}


def guarded(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A destination shaped like ``like`` inside a buffer with guard bytes: (buffer, target)."""
    buffer = torch.full((like.nbytes + 2 * GUARD,), 0xA5, dtype=torch.uint8)
    target = buffer[GUARD : GUARD + like.nbytes].view(like.dtype).view(like.size())
    target.zero_()
    return buffer, target


def views(data: bytes, cuts: list[int]) -> list[memoryview]:
    view = memoryview(data)
    edges = [0, *sorted({cut for cut in cuts if 0 < cut < len(data)}), len(data)]
    return [view[start:end] for start, end in itertools.pairwise(edges)]


def check(data: bytes, name: str, cuts: list[int]) -> None:
    original = ORIGINALS[name]
    buffer, target = guarded(original)
    before = buffer.clone()
    done = copy_stored_tensor(
        views(data, cuts), target, [0] * original.dim(), list(original.size())
    )
    assert isinstance(done, bool)
    assert torch.equal(buffer[:GUARD], before[:GUARD])  # nothing before the destination
    assert torch.equal(buffer[-GUARD:], before[-GUARD:])  # nothing after it
    if not done:
        assert torch.equal(buffer, before)  # nothing at all


names = st.sampled_from(sorted(ITEMS))
cut_lists = st.lists(st.integers(min_value=0, max_value=4000), max_size=4)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, fraction=st.floats(min_value=0.0, max_value=1.0), cuts=cut_lists)
def test_a_truncated_item(name: str, fraction: float, cuts: list[int]) -> None:
    data = ITEMS[name]
    check(data[: int(len(data) * fraction)], name, cuts)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=names,
    flips=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=1.0), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
    cuts=cut_lists,
)
def test_an_item_with_flipped_bytes(
    name: str, flips: list[tuple[float, int]], cuts: list[int]
) -> None:
    data = bytearray(ITEMS[name])
    for where, mask in flips:
        data[min(int(len(data) * where), len(data) - 1)] ^= mask
    check(bytes(data), name, cuts)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=names,
    start=st.floats(min_value=0.0, max_value=1.0),
    junk=st.binary(min_size=1, max_size=64),
    cuts=cut_lists,
)
def test_an_item_with_bytes_overwritten_near_its_end(
    name: str, start: float, junk: bytes, cuts: list[int]
) -> None:
    """The zip directory and end record sit at the end: overwrite pieces of them."""
    data = bytearray(ITEMS[name])
    tail = len(data) - 200
    at = tail + int(200 * start)
    data[at : at + len(junk)] = junk
    check(bytes(data[: len(ITEMS[name])]), name, cuts)


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_the_undamaged_items_are_copied(name: str) -> None:
    original = ORIGINALS[name]
    buffer, target = guarded(original)
    assert copy_stored_tensor(
        views(ITEMS[name], [7]), target, [0] * original.dim(), list(original.size())
    )
    assert torch.equal(target, original)
    assert bool((buffer[:GUARD] == 0xA5).all())
    assert bool((buffer[-GUARD:] == 0xA5).all())
