"""Model-based property tests: every reader behaves like io.BytesIO over the same bytes.

Random sequences of read / read(None) / readinto / seek (all three whences) /
tell run against a reader on the real test server and against a model, an
io.BytesIO that refuses negative positions (seeks past the end are allowed in both).
Objects of 0 bytes, 1 byte and more than several parts.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3torch.client import S3Client
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

MiB = 1024 * 1024
PART = 5 * MiB
SIZES = [0, 1, 3 * PART + 4321]
CONSTRUCTORS = {
    "sequential": S3ReaderConstructor.sequential(),
    "range_based": S3ReaderConstructor.range_based(),
    "range_based_small_buffer": S3ReaderConstructor.range_based(buffer_size=64 * 1024),
    "range_based_unbuffered": S3ReaderConstructor.range_based(buffer_size=0),
}
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class StrictBytesIO(io.BytesIO):
    """io.BytesIO that refuses negative positions, as readers do.

    (io.BytesIO itself clamps a negative SEEK_CUR or SEEK_END result to 0.)
    """

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        size = len(self.getbuffer())
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        return super().seek(base + offset)


def _operation(size: int) -> st.SearchStrategy[tuple[Any, ...]]:
    span = max(size, 1)
    lengths = st.one_of(st.integers(0, 64), st.integers(0, span + 10), st.just(PART + 1))
    return st.one_of(
        st.tuples(st.just("read"), lengths),
        st.tuples(st.just("read_all"), st.sampled_from([None, -1])),
        st.tuples(st.just("readinto"), lengths),
        st.tuples(st.just("seek"), st.integers(-span - 5, span + 5), st.sampled_from([0, 1, 2])),
        st.tuples(st.just("tell")),
    )


def _apply(target: Any, operation: tuple[Any, ...]) -> Any:
    name = operation[0]
    try:
        if name == "read":
            return bytes(target.read(operation[1]))
        if name == "read_all":
            return bytes(target.read(operation[1]))
        if name == "readinto":
            buffer = bytearray(operation[1])
            count = target.readinto(buffer)
            return count, bytes(buffer[:count])
        if name == "seek":
            return target.seek(operation[1], operation[2])
        return target.tell()
    except (ValueError, TypeError) as error:
        return type(error)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", list(CONSTRUCTORS))
@pytest.mark.parametrize("known_size", [True, False], ids=["info", "no-info"])
def test_every_reader_behaves_like_bytesio(
    small_part_client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    size: int,
    kind: str,
    known_size: bool,
) -> None:
    data = upload("obj", size)
    info = small_part_client.head_object(bucket, "obj") if known_size else None

    @SETTINGS
    @given(operations=st.lists(_operation(size), max_size=12))
    def check(operations: list[tuple[Any, ...]]) -> None:
        model = StrictBytesIO(data)
        with get_object(
            small_part_client,
            bucket,
            "obj",
            reader_constructor=CONSTRUCTORS[kind],
            object_info=info,
        ) as reader:
            for operation in operations:
                assert _apply(reader, operation) == _apply(model, operation), operation

    check()


@st.composite
def _dcp_plan(draw: st.DrawFn, size: int) -> tuple[list[ItemRange], list[tuple[Any, ...]]]:
    """Sorted, disjoint item ranges and a DCP-like walk over (some of) them."""
    cuts = sorted(draw(st.lists(st.integers(0, size), min_size=2, max_size=12, unique=True)))
    items = [ItemRange(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
    walk: list[tuple[Any, ...]] = []
    for item in items:
        if not item.length or (draw(st.booleans()) and draw(st.booleans())):
            continue  # DCP may not need every item of a file
        walk.append(("seek", item.start, 0))
        for _ in range(draw(st.integers(1, 4))):
            offset = draw(st.integers(item.start, item.end))
            length = draw(st.integers(0, item.end - offset))
            how = draw(st.sampled_from(["read", "readinto"]))
            walk += [("seek", offset, 0), (how, length), ("tell",)]
        walk += [("seek", item.start, 0), ("read", item.length)]
    return items, walk


@pytest.mark.parametrize("max_gap_size", [0, 1 * MiB, float("inf")])
def test_the_dcp_reader_behaves_like_bytesio_on_dcp_walks(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes], max_gap_size: float
) -> None:
    size = 3 * PART + 4321
    data = upload("obj", size)

    @SETTINGS
    @given(plan=_dcp_plan(size))
    def check(plan: tuple[list[ItemRange], list[tuple[Any, ...]]]) -> None:
        items, walk = plan
        if not any(item.length for item in items):
            return
        constructor = S3ReaderConstructor.dcp_optimized(max_gap_size)
        constructor.set_item_ranges({f"s3://{bucket}/obj": items})
        model = StrictBytesIO(data)
        with get_object(small_part_client, bucket, "obj", reader_constructor=constructor) as reader:
            for operation in walk:
                assert _apply(reader, operation) == _apply(model, operation), operation

    check()
