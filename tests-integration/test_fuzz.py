"""Fuzzing every input a user hands s3torch: a correct value, or an error that names the input.

Hypothesis draws S3 URIs, ``S3ClientConfig`` fields, prefix-strategy
arguments, DCP checkpoint paths and Lightning checkpoint paths, and hostile
``seek``/``read``/``readinto`` arguments and out-of-plan walks on every reader
kind (packages/s3torch-readers/tests/test_model.py covers well-formed
operations; this file covers the rest). Each property is: the call returns the
right value, or raises one of the documented exceptions (``ValueError``,
``TypeError``) whose message names what was wrong. Pure parsing runs many
examples; the examples that touch the server share one module-wide bucket,
client and small objects.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locals3.pytest_plugin import empty_and_remove, new_bucket_name
from s3torch.client import S3Client, S3ClientConfig, parse_s3_uri
from s3torch.dcp import (
    BinaryPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3StorageReader,
    S3StorageWriter,
)
from s3torch.lightning import S3LightningCheckpoint
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

# Derandomized: CI runs the same examples every time (a gate must not flake
# on which examples a run happened to draw).
PURE = settings(max_examples=600, deadline=None, derandomize=True)
NETWORK = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
KEY_LIMIT = 1024  # bytes of UTF-8


def attempt(call: Callable[[], Any]) -> Any:
    """What ``call()`` returns, or the ``ValueError``/``TypeError`` it raises."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        return error


def names(error: BaseException, *inputs: object) -> bool:
    """Whether the message of ``error`` names one of ``inputs`` (as written, or its repr)."""
    message = str(error)
    return any(str(value) in message or repr(value) in message for value in inputs)


# ------------------------------------------------------------------ strategies
bucket_names = st.one_of(
    st.from_regex(BUCKET_NAME, fullmatch=True),
    st.text(st.characters(codec="ascii"), max_size=70),
)
keys = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.sampled_from("ab/._- "), max_size=1100),
    st.just("x" * 1025),
)
uris = st.one_of(
    st.builds(lambda b, k: f"s3://{b}/{k}", bucket_names, keys),
    st.builds(lambda b: f"s3://{b}", bucket_names),
    st.builds(
        lambda s, b, k: f"{s}{b}/{k}",
        st.sampled_from(["S3://", "s3:/", "s3a://", ""]),
        bucket_names,
        keys,
    ),
    st.text(max_size=60),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=10),
)


# S3's rule, widened (as parse_s3_uri documents) to legacy us-east-1 names: upper case,
# underscores, up to 255 characters.
LEGACY_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def valid_bucket(bucket: str) -> bool:
    return bool(LEGACY_BUCKET_NAME.fullmatch(bucket)) and ".." not in bucket


# ------------------------------------------------------------------ URIs
@PURE
@given(uri=st.one_of(uris, anything))
def test_parse_s3_uri_returns_the_parts_or_names_the_uri(uri: Any) -> None:
    result = attempt(lambda: parse_s3_uri(uri))
    if isinstance(result, Exception):
        assert isinstance(result, ValueError), (uri, result)
        assert names(result, uri), (uri, result)
        return
    bucket, key = result
    assert isinstance(uri, str)
    assert uri in (f"s3://{bucket}/{key}", f"s3://{bucket}")
    assert valid_bucket(bucket)
    assert len(key.encode("utf-8")) <= KEY_LIMIT


# ------------------------------------------------------------------ config
CONFIG_FIELDS = {
    "throughput_target_gbps": st.one_of(st.floats(0.01, 400), anything),
    "part_size": st.one_of(st.integers(5 * 2**20, 64 * 2**20), anything),
    "unsigned": st.one_of(st.booleans(), anything),
    "force_path_style": st.one_of(st.booleans(), anything),
    "max_attempts": st.one_of(st.integers(1, 20), anything),
    "profile": st.one_of(st.none(), st.text(min_size=1, max_size=8), anything),
    "requester_pays": st.one_of(st.booleans(), anything),
    "memory_limit": st.one_of(st.integers(2**28, 2**34), anything),
    "checksum_algorithm": st.one_of(
        st.sampled_from([None, "CRC64NVME", "CRC32C", "CRC32", "SHA1", "SHA256", "crc32"]),
        anything,
    ),
    "stall_timeout": st.one_of(st.none(), st.floats(0.001, 1e6), anything),
    "request_timeout": st.one_of(st.none(), st.floats(0.001, 1e6), anything),
    "connect_timeout": st.one_of(st.floats(0.001, 1e6), anything),
}


@PURE
@given(fields=st.fixed_dictionaries({}, optional=CONFIG_FIELDS))
def test_a_config_keeps_its_fields_or_names_the_bad_one(fields: dict[str, Any]) -> None:
    config = attempt(lambda: S3ClientConfig(**fields))
    if isinstance(config, Exception):
        assert any(name in str(config) for name in fields), (fields, config)
        return
    for name, value in fields.items():
        assert getattr(config, name) == value or (isinstance(value, float) and math.isnan(value)), (
            name
        )
    assert config.max_connections >= 10
    assert config.readahead_parts >= 2
    assert config.upload_parts_in_flight >= 2


# ------------------------------------------------------------------ prefix strategies
RANKS = range(40)


def check_prefixes(strategy: Any) -> None:
    """Each rank's prefix is its own, ends where file numbers go, and can start an S3 key."""
    prefixes = [strategy(rank) for rank in RANKS]
    assert len(set(prefixes)) == len(prefixes)
    for rank, prefix in zip(RANKS, prefixes, strict=True):
        assert prefix.endswith(f"__{rank}_"), prefix
        assert not prefix.startswith("/"), prefix
        assert len(f"{prefix}0.distcp".encode()) <= KEY_LIMIT, prefix


@PURE
@given(
    user_prefixes=st.one_of(
        st.lists(st.one_of(st.text(max_size=12), anything), max_size=4), anything
    ),
    epoch_num=st.one_of(st.none(), st.integers(-5, 10**6), anything),
)
def test_round_robin_prefixes_or_an_error_naming_the_argument(
    user_prefixes: Any, epoch_num: Any
) -> None:
    strategy = attempt(lambda: RoundRobinPrefixStrategy(user_prefixes, epoch_num))
    if isinstance(strategy, Exception):
        bad = [*user_prefixes] if isinstance(user_prefixes, list) else []
        assert names(strategy, user_prefixes, epoch_num, *bad), (user_prefixes, epoch_num)
        return
    check_prefixes(strategy)


@PURE
@given(
    kind=st.sampled_from([BinaryPrefixStrategy, HexPrefixStrategy]),
    epoch_num=st.one_of(st.none(), st.integers(-5, 10**6), anything),
    min_prefix_length=st.one_of(st.integers(-2, 40), st.integers(1, 10**9), anything),
    prefix_count=st.one_of(st.none(), st.integers(-2, 64), st.integers(1, 10**12), anything),
)
def test_numeric_prefixes_or_an_error_naming_the_argument(
    kind: Any, epoch_num: Any, min_prefix_length: Any, prefix_count: Any
) -> None:
    strategy = attempt(lambda: kind(epoch_num, min_prefix_length, prefix_count))
    if isinstance(strategy, Exception):
        assert names(strategy, epoch_num, min_prefix_length, prefix_count), strategy
        return
    check_prefixes(strategy)


# ------------------------------------------------------------------ DCP paths
@PURE
@given(path=st.one_of(uris, anything), reader=st.booleans())
def test_dcp_paths_are_normalized_or_named(path: Any, reader: bool, s3_region: str) -> None:
    make = S3StorageReader if reader else S3StorageWriter
    storage = attempt(lambda: make(s3_region, path, endpoint="http://127.0.0.1:9"))
    if isinstance(storage, Exception):
        assert names(storage, path), (path, storage)
        return
    bucket, key = parse_s3_uri(path)
    assert storage.path == (
        f"s3://{bucket}/{key.rstrip('/')}" if key.rstrip("/") else f"s3://{bucket}"
    )


# ------------------------------------------------------------------ network: shared fixtures
@pytest.fixture(scope="module")
def shared_bucket(boto3_s3: Any) -> Iterator[str]:
    name = new_bucket_name()
    boto3_s3.create_bucket(Bucket=name)
    yield name
    empty_and_remove(boto3_s3, name)


@pytest.fixture(scope="module")
def shared_client(s3_region: str, s3_endpoint: str) -> Iterator[S3Client]:
    with S3Client(s3_region, endpoint=s3_endpoint) as client:
        yield client


DATA = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes


@pytest.fixture(scope="module")
def stored(boto3_s3: Any, shared_bucket: str) -> str:
    boto3_s3.put_object(Bucket=shared_bucket, Key="data", Body=DATA)
    return "data"


class StrictBytesIO(io.BytesIO):
    """io.BytesIO refusing negative positions, as the readers do (see test_model.py)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if isinstance(offset, int) and whence in (0, 1, 2):
            base = {0: 0, 1: self.tell(), 2: len(self.getbuffer())}[whence]
            if base + offset < 0:
                raise ValueError(f"negative seek position {base + offset}")
        return super().seek(offset, whence)


hostile = st.one_of(
    st.integers(-20_000, 20_000),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.integers(2**63, 2**70),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), hostile),
        st.tuples(st.just("readinto"), st.integers(0, 12_000)),
        st.tuples(st.just("seek"), hostile, st.one_of(st.integers(-2, 5), hostile)),
        st.tuples(st.just("tell")),
    ),
    max_size=10,
)


def apply(target: Any, operation: tuple[Any, ...]) -> Any:
    name = operation[0]
    try:
        if name == "read":
            return bytes(target.read(operation[1]))
        if name == "readinto":
            buffer = bytearray(operation[1])
            count = target.readinto(buffer)
            return count, bytes(buffer[:count])
        if name == "seek":
            return target.seek(operation[1], operation[2])
        return target.tell()
    except (ValueError, TypeError, OverflowError) as error:
        return error


@pytest.mark.parametrize("kind", ["sequential", "range_based"])
def test_hostile_reader_arguments_behave_like_bytesio_or_are_named(
    shared_client: S3Client, shared_bucket: str, stored: str, kind: str
) -> None:
    constructor = {
        "sequential": S3ReaderConstructor.sequential(),
        "range_based": S3ReaderConstructor.range_based(buffer_size=1024),
    }[kind]

    @NETWORK
    @given(walk=operations)
    def check(walk: list[tuple[Any, ...]]) -> None:
        model = StrictBytesIO(DATA)
        with get_object(shared_client, shared_bucket, stored, reader_constructor=constructor) as r:
            for operation in walk:
                ours, expected = apply(r, operation), apply(model, operation)
                if isinstance(ours, BaseException):
                    # Refused (BytesIO may be laxer: read(False) is read(0) there).
                    assert isinstance(ours, (ValueError, TypeError)), (operation, ours)
                    assert names(ours, *operation[1:]), (operation, ours)
                    if not isinstance(expected, BaseException):
                        return  # the model moved on; the reader did not
                elif isinstance(expected, OverflowError) and operation[0] == "read":
                    # A size beyond C's ssize_t: BytesIO gives up, a reader reads to the end.
                    assert ours == model.read(), (operation, ours)
                elif isinstance(expected, OverflowError):
                    # A position beyond C's ssize_t: BytesIO gives up, a reader goes there.
                    assert ours == r.tell() >= 2**63, (operation, ours)
                    return
                else:
                    assert ours == expected, (operation, ours, expected)

    check()


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[ItemRange], list[tuple[Any, ...]]]:
    cuts = sorted(draw(st.lists(st.integers(0, len(DATA)), min_size=2, max_size=8, unique=True)))
    items = [ItemRange(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
    walk = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("read"), st.integers(-1, len(DATA) + 5)),
                st.tuples(st.just("seek"), st.integers(-5, len(DATA) + 5), st.integers(0, 2)),
                st.tuples(st.just("tell")),
            ),
            max_size=10,
        )
    )
    return items, walk


def test_the_dcp_reader_off_its_plan_gives_the_bytes_or_names_the_object(
    shared_client: S3Client, shared_bucket: str, stored: str
) -> None:
    uri = f"s3://{shared_bucket}/{stored}"

    @NETWORK
    @given(plan=plans())
    def check(plan: tuple[list[ItemRange], list[tuple[Any, ...]]]) -> None:
        items, walk = plan
        if not any(item.length for item in items):
            return
        constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=100)
        constructor.set_item_ranges({uri: items})
        model = StrictBytesIO(DATA)
        with get_object(shared_client, shared_bucket, stored, reader_constructor=constructor) as r:
            for operation in walk:
                ours, expected = apply(r, operation), apply(model, operation)
                if isinstance(ours, BaseException):
                    # Off the plan: refused, naming the object; never wrong bytes.
                    assert isinstance(ours, ValueError), (operation, ours)
                    assert uri in str(ours) or names(ours, *operation[1:]), (operation, ours)
                    return
                assert ours == expected, (operation, ours, expected)

    check()


# ------------------------------------------------------------------ Lightning paths
lightning_keys = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=30
)


@pytest.fixture(scope="module")
def plugin(s3_region: str, s3_endpoint: str) -> Iterator[S3LightningCheckpoint]:
    checkpoint_io = S3LightningCheckpoint(s3_region, endpoint=s3_endpoint)
    yield checkpoint_io
    checkpoint_io.close()


def test_lightning_paths_round_trip_or_are_named(
    plugin: S3LightningCheckpoint, shared_bucket: str
) -> None:
    paths = st.one_of(
        st.builds(lambda key: f"s3://{shared_bucket}/{key}", lightning_keys),
        st.builds(
            lambda scheme, key: f"{scheme}{shared_bucket}/{key}",
            st.sampled_from(["s3:/", "gs://", "s3://-bad-/", "s3://"]),
            lightning_keys,
        ),
        st.just(f"s3://{shared_bucket}"),
        st.just(f"s3://{shared_bucket}/"),
        anything.filter(lambda value: not isinstance(value, (str, bytes))),
    )

    @NETWORK
    @given(path=paths, step=st.integers(0, 1000))
    def check(path: Any, step: int) -> None:
        state = {"step": step, "w": torch.arange(3.0) + step}
        refused = attempt(lambda: plugin.save_checkpoint(state, path))
        if refused is not None:
            assert names(refused, path), (path, refused)
            with pytest.raises(type(refused)) as again:
                plugin.load_checkpoint(path)
            assert names(again.value, path), (path, again.value)
            return
        assert isinstance(path, str)
        assert path.startswith(f"s3://{shared_bucket}/")
        loaded = plugin.load_checkpoint(path)
        assert loaded["step"] == step
        assert torch.equal(loaded["w"], state["w"])
        round_trips.append(path)

    round_trips: list[str] = []
    check()
    assert len(round_trips) >= 5, round_trips  # the valid paths were not all filtered away
