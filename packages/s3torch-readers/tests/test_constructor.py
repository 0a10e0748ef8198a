"""S3ReaderConstructor: the seed's factories, comparable and picklable."""

from __future__ import annotations

import pickle

import pytest

from s3torch.readers import ItemRange, S3ReaderConstructor, S3ReaderConstructorProtocol


@pytest.mark.parametrize(
    ("constructor", "type_string"),
    [
        (S3ReaderConstructor.sequential(), "sequential"),
        (S3ReaderConstructor.default(), "sequential"),
        (S3ReaderConstructor.range_based(), "range_based"),
        (S3ReaderConstructor.range_based(buffer_size=0), "range_based"),
        (S3ReaderConstructor.dcp_optimized(), "dcp_optimized"),
        (None, "sequential"),
    ],
)
def test_type_strings(constructor: S3ReaderConstructorProtocol | None, type_string: str) -> None:
    assert S3ReaderConstructor.get_reader_type_string(constructor) == type_string


def test_constructors_compare_by_their_settings() -> None:
    assert S3ReaderConstructor.sequential() == S3ReaderConstructor.default()
    assert S3ReaderConstructor.range_based() == S3ReaderConstructor.range_based(None)
    assert S3ReaderConstructor.range_based(1024) == S3ReaderConstructor.range_based(1024)
    assert S3ReaderConstructor.range_based(1024) != S3ReaderConstructor.range_based(0)
    assert S3ReaderConstructor.dcp_optimized() == S3ReaderConstructor.dcp_optimized(32 * 1024**2)
    assert S3ReaderConstructor.dcp_optimized(0) != S3ReaderConstructor.dcp_optimized()
    assert S3ReaderConstructor.sequential() != S3ReaderConstructor.range_based()
    assert hash(S3ReaderConstructor.range_based(7)) == hash(S3ReaderConstructor.range_based(7))


@pytest.mark.parametrize(
    "constructor",
    [
        S3ReaderConstructor.sequential(),
        S3ReaderConstructor.range_based(4096),
        S3ReaderConstructor.dcp_optimized(float("inf")),
    ],
)
def test_constructors_pickle(constructor: S3ReaderConstructorProtocol) -> None:
    clone = pickle.loads(pickle.dumps(constructor))
    assert clone == constructor
    assert isinstance(clone, S3ReaderConstructorProtocol)


def test_the_dcp_constructor_carries_its_ranges_through_pickle() -> None:
    constructor = S3ReaderConstructor.dcp_optimized()
    constructor.set_item_ranges({"s3://b/k": [ItemRange(0, 5)]})
    clone = pickle.loads(pickle.dumps(constructor))
    assert clone.item_ranges_by_uri == {"s3://b/k": (ItemRange(0, 5),)}


@pytest.mark.parametrize("gap", [-1, float("nan"), "32"])
def test_the_dcp_constructor_refuses_bad_gaps(gap: object) -> None:
    with pytest.raises(ValueError, match="max_gap_size must be a number >= 0"):
        S3ReaderConstructor.dcp_optimized(gap)  # type: ignore[arg-type]
