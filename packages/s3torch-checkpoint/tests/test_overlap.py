"""S3CheckpointReader(overlap=True): torch.load overlaps the download, and is still validated.

Every test loads through ``torch.load`` (the reader keeps the errors raised
under it and raises them from the next call torch makes). A fault proxy
between client and moto flips the middle byte of one GET's body: the tests
place that byte in a record, a local header, the padding of a local header's
extra field (covered only by the full-object CRC), or a field of the central
directory, by choosing the part size (the client's ranged GETs) or the size
of the first GET of the tail.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader
from s3torch.checkpoint import _overlap as overlap_module
from s3torch.client import S3ChecksumMismatchError

MiB = 1024 * 1024
PART = 5 * MiB + 74  # the first ranged GET is [0, PART): its middle byte is 2621477 (37 mod 64)
MIDDLE = PART // 2


def _save(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _records(data: bytes) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: info for info in archive.infolist()}


def _state(first_bytes: int) -> dict[str, Any]:
    """Three uint8 tensors (the first of ``first_bytes``) and a small one, and an int."""
    generator = torch.Generator().manual_seed(first_bytes)

    def tensor(size: int) -> torch.Tensor:
        return torch.randint(0, 256, (size,), dtype=torch.uint8, generator=generator)

    return {
        "a": tensor(first_bytes),
        "b": torch.randn(MiB // 4, generator=generator),
        "c": tensor(3 * MiB),
        "d": torch.arange(1024, dtype=torch.int64),  # over 4 KiB: the tail holds only it
        "step": 7,
    }


def _state_with_second_header_at(offset: int) -> dict[str, Any]:
    """A state whose second storage record (``data/1``) has its local header at ``offset``."""
    trial = 2 * MiB
    header = _records(_save(_state(trial)))["archive/data/1"].header_offset
    state = _state(trial + offset - header)
    assert _records(_save(state))["archive/data/1"].header_offset == offset
    return state


def _assert_equal(loaded: dict[str, Any], state: dict[str, Any]) -> None:
    assert loaded.keys() == state.keys()
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            assert loaded[name].dtype == value.dtype
            assert torch.equal(loaded[name], value), name
        else:
            assert loaded[name] == value


@pytest.fixture
def store(make_client: Any, s3_region: str, bucket: str) -> Callable[[dict[str, Any]], str]:
    """``store(state) -> uri``: the state saved with S3Checkpoint (a full-object CRC64NVME).

    In 5 MiB parts: moto stores the checksum of a multipart upload, not of a
    single PUT (and an object without one is read whole, unchecked).
    """

    def save(state: dict[str, Any]) -> str:
        uri = f"s3://{bucket}/c.pt"
        with (
            make_client(part_size=5 * MiB) as client,
            S3Checkpoint(s3_region, client=client) as checkpoint,
            checkpoint.writer(uri) as writer,
        ):
            torch.save(state, writer)
        return uri

    return save


@pytest.fixture
def overlapping(
    make_client: Any, s3_region: str, fault_proxy: FaultProxy
) -> Iterator[S3Checkpoint]:
    """An S3Checkpoint through the fault proxy whose reader overlaps (1 MiB blocks)."""
    constructor = functools.partial(S3CheckpointReader, overlap=True, block_size=MiB)
    with (
        make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=1) as client,
        S3Checkpoint(s3_region, client=client, reader_constructor=constructor) as checkpoint,
    ):
        yield checkpoint


def _gets(fault_proxy: FaultProxy) -> list[Any]:
    return [seen for seen in fault_proxy.seen if seen.kind == RequestKind.GET]


def _tail_first(fault_proxy: FaultProxy) -> bool:
    """Whether the load was overlapped: its first GET reads the object's end."""
    gets = _gets(fault_proxy)
    return (
        bool(gets)
        and gets[0].headers.get("range", "").startswith("bytes=")
        and not (gets[0].headers["range"].startswith("bytes=0-"))
    )


def _flip_in(fault_proxy: FaultProxy, first: int) -> Any:
    """Flip the middle byte of the GET whose range starts at ``first``."""
    return fault_proxy.inject(
        Fault.flip_response(),
        kinds=RequestKind.GET,
        when=lambda request: request.headers.get("range", "").startswith(f"bytes={first}-"),
    )


def test_it_loads_what_a_plain_load_loads_reading_the_tail_first_and_each_byte_once(
    overlapping: S3Checkpoint,
    store: Callable[[dict[str, Any]], str],
    fault_proxy: FaultProxy,
    boto3_s3: Any,
    bucket: str,
) -> None:
    state = _state(4 * MiB)
    uri = store(state)
    size = boto3_s3.head_object(Bucket=bucket, Key="c.pt")["ContentLength"]
    etag = boto3_s3.head_object(Bucket=bucket, Key="c.pt")["ETag"]
    with overlapping.reader(uri) as reader:
        loaded = torch.load(reader, weights_only=True)
        # The blocks torch.load has moved past were given back as it went.
        blocks = reader._blocks  # type: ignore[attr-defined]
        held = [block for block in blocks[:-1] if block.pieces is not None]
        assert len(blocks) > 8
        assert len(held) <= 1, [(b.start, b.end) for b in held]
    _assert_equal(loaded, state)
    _assert_equal(loaded, torch.load(io.BytesIO(_save(state)), weights_only=True))
    gets = _gets(fault_proxy)
    # The end first (the directory torch reads first), every GET pinned to the version read.
    assert gets[0].headers["range"] == f"bytes={size - 64 * 1024}-{size - 1}"
    assert all(get.headers.get("if-match") == etag for get in gets)
    assert sum(get.response_bytes for get in gets) == size  # each byte fetched once
    assert any(get.headers["range"].startswith("bytes=0-") for get in gets)


def test_torch_load_reads_the_first_tensors_while_the_rest_is_still_downloading(
    overlapping: S3Checkpoint,
    store: Callable[[dict[str, Any]], str],
    fault_proxy: FaultProxy,
) -> None:
    state = _state(4 * MiB)
    uri = store(state)
    # The second window of the download ([PART, ...)) answers a second late.
    fault_proxy.inject(
        Fault.first_byte_delay(1.0),
        kinds=RequestKind.GET,
        when=lambda request: request.headers.get("range", "").startswith(f"bytes={PART}-"),
    )
    first_tensor_at: list[float] = []

    class Timed(S3CheckpointReader):
        def _readinto_at(self, position: int, view: memoryview) -> int:
            count = super()._readinto_at(position, view)
            if count == 4 * MiB and not first_tensor_at:  # tensor "a", in the first window
                first_tensor_at.append(time.monotonic())
            return count

    constructor = functools.partial(Timed, overlap=True, block_size=MiB)
    with (
        S3Checkpoint(
            overlapping.region, client=overlapping.client, reader_constructor=constructor
        ) as checkpoint,
        checkpoint.reader(uri) as reader,
    ):
        loaded = torch.load(reader, weights_only=True)
    done_at = time.monotonic()
    _assert_equal(loaded, state)
    assert first_tensor_at, "torch.load never read tensor 'a' in one read"
    assert done_at - first_tensor_at[0] > 0.5  # it had "a" a second before the download ended


def test_a_byte_flipped_in_a_record_raises_naming_the_object_and_the_record(
    overlapping: S3Checkpoint, store: Callable[[dict[str, Any]], str], fault_proxy: FaultProxy
) -> None:
    state = _state(4 * MiB)  # tensor "a" (data/0) holds byte MIDDLE
    uri = store(state)
    flipped = _flip_in(fault_proxy, 0)
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert _tail_first(fault_proxy)
    assert "record 'archive/data/0'" in str(caught.value)
    assert "CRC-32" in str(caught.value)
    assert (caught.value.key, caught.value.code) == ("c.pt", "ChecksumMismatch")
    assert uri in str(caught.value)


def test_a_byte_flipped_in_a_local_header_raises(
    overlapping: S3Checkpoint, store: Callable[[dict[str, Any]], str], fault_proxy: FaultProxy
) -> None:
    state = _state_with_second_header_at(MIDDLE - 6)  # MIDDLE: the header's flags
    uri = store(state)
    flipped = _flip_in(fault_proxy, 0)
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert _tail_first(fault_proxy)
    assert "record 'archive/data/1'" in str(caught.value)
    assert "local header" in str(caught.value)
    assert caught.value.key == "c.pt"


def test_a_byte_flipped_where_no_record_crc_covers_raises_before_torch_load_returns(
    overlapping: S3Checkpoint, store: Callable[[dict[str, Any]], str], fault_proxy: FaultProxy
) -> None:
    # data/1's local header at MIDDLE - 5 - 48: MIDDLE is in the padding of its extra field,
    # which torch skips: only the full-object checksum covers it.
    state = _state_with_second_header_at(MIDDLE - 5 - 48)
    data = _save(state)
    header = _records(data)["archive/data/1"].header_offset
    name_length, extra_length = struct.unpack_from("<2H", data, header + 26)
    assert header + 30 + name_length + 4 <= MIDDLE < header + 30 + name_length + extra_length
    uri = store(state)
    flipped = _flip_in(fault_proxy, 0)
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert _tail_first(fault_proxy)
    assert "CRC64NVME" in str(caught.value)
    assert "not the last of them" in str(caught.value)
    assert caught.value.key == "c.pt"


def _directory_fields(data: bytes) -> dict[str, int]:
    """Offsets in ``data`` of some fields of the central directory and end records."""
    end = len(data) - 22
    directory = struct.unpack_from("<L", data, end + 16)[0]
    if directory == 0xFFFFFFFF:
        directory = struct.unpack_from("<Q", data, end - 20 - 56 + 48)[0]
    entry = directory
    while data[entry + 46 : entry + 46 + 14] != b"archive/data/1":
        entry += 46 + sum(struct.unpack_from("<3H", data, entry + 28))
    return {
        "made-by": entry + 4,
        "crc": entry + 17,
        "size": entry + 21,
        "name": entry + 46 + 13,
        "offset": entry + 43,
        "end-record": end + 17,
    }


@pytest.mark.parametrize("field", ["made-by", "crc", "size", "name", "offset", "end-record"])
def test_a_byte_flipped_in_the_central_directory_raises(
    overlapping: S3Checkpoint,
    store: Callable[[dict[str, Any]], str],
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
) -> None:
    state = _state(4 * MiB)
    data = _save(state)
    target = _directory_fields(data)[field]
    # The first GET is the last N bytes; its middle byte is the target.
    tail = 2 * (len(data) - target)
    monkeypatch.setattr(overlap_module, "TAIL_FIRST_BYTES", tail)
    uri = store(state)
    flipped = _flip_in(fault_proxy, len(data) - tail)
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert _tail_first(fault_proxy)
    assert caught.value.key == "c.pt"
    assert caught.value.code == "ChecksumMismatch"


def test_an_archive_not_quite_torch_s_is_loaded_whole_and_still_validated(
    overlapping: S3Checkpoint,
    make_client: Any,
    s3_region: str,
    bucket: str,
    fault_proxy: FaultProxy,
) -> None:
    state = _state(4 * MiB)
    with zipfile.ZipFile(buffer := io.BytesIO(_save(state)), "a") as archive:
        archive.comment = b"a comment torch.save never writes"
    uri = f"s3://{bucket}/c.pt"
    with (
        make_client(part_size=5 * MiB) as client,
        S3Checkpoint(s3_region, client=client) as checkpoint,
        checkpoint.writer(uri) as writer,
    ):
        writer.write(buffer.getvalue())
    with overlapping.reader(uri) as reader:
        _assert_equal(torch.load(reader, weights_only=True), state)
    fault_proxy.seen.clear()
    flipped = _flip_in(fault_proxy, 0)
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert _tail_first(fault_proxy)
    assert "none of them was handed to torch.load" in str(caught.value)


def test_a_legacy_pickle_checkpoint_falls_back_and_loads(
    overlapping: S3Checkpoint, make_client: Any, s3_region: str, bucket: str
) -> None:
    state = {"w": torch.arange(6 * MiB // 8, dtype=torch.int64), "step": 2}
    uri = f"s3://{bucket}/legacy.pt"
    with (
        make_client(part_size=5 * MiB) as client,
        S3Checkpoint(s3_region, client=client) as checkpoint,
        checkpoint.writer(uri) as writer,
    ):
        torch.save(state, writer, _use_new_zipfile_serialization=False)
    with overlapping.reader(uri) as reader:
        _assert_equal(torch.load(reader, weights_only=True), state)


def test_something_that_is_not_a_checkpoint_is_still_named(
    overlapping: S3Checkpoint, make_client: Any, s3_region: str, bucket: str
) -> None:
    uri = f"s3://{bucket}/notes.txt"
    with (
        make_client(part_size=5 * MiB) as client,
        S3Checkpoint(s3_region, client=client) as checkpoint,
        checkpoint.writer(uri) as writer,
    ):
        writer.write(b"not a checkpoint\n" * 10000)
    with (
        overlapping.reader(uri) as reader,
        pytest.raises(ValueError, match=r"not a checkpoint torch\.load can read"),
    ):
        torch.load(reader, weights_only=True)
