"""S3Checkpoint: construction, settings, URIs, errors, the basic save and load round trip."""

from __future__ import annotations

import gzip
import io
import pickle
from typing import Any

import pytest
import torch

from s3torch.checkpoint import (
    NotACheckpointError,
    S3Checkpoint,
    S3CheckpointReader,
    S3CheckpointWriter,
)
from s3torch.client import S3Client, S3ClientConfig, S3NotFoundError, S3Writer
from s3torch.readers import RangedS3Reader, S3ReaderConstructor, SequentialS3Reader


def test_round_trip_of_a_state_dict(checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any) -> None:
    state = {"weight": torch.randn(64, 32), "step": 7, "name": "run-1"}
    with checkpoint.writer(f"s3://{bucket}/ckpt/a.pt") as writer:
        assert isinstance(writer, S3CheckpointWriter)
        torch.save(state, writer)
    stored = boto3_s3.get_object(Bucket=bucket, Key="ckpt/a.pt")["Body"].read()
    assert torch.load(io.BytesIO(stored))["step"] == 7  # what is stored is a plain torch.save file

    with checkpoint.reader(f"s3://{bucket}/ckpt/a.pt") as reader:
        assert isinstance(reader, S3CheckpointReader)
        loaded = torch.load(reader)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["weight"], state["weight"])
    assert (loaded["step"], loaded["name"]) == (7, "run-1")


def test_the_checkpoint_writer_is_an_s3writer_as_the_seed_says(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    writer = checkpoint.writer(f"s3://{bucket}/contract.pt")
    assert isinstance(writer, S3Writer)
    assert issubclass(S3CheckpointWriter, S3Writer)
    assert (writer.bucket, writer.key, writer.uri) == (
        bucket,
        "contract.pt",
        f"s3://{bucket}/contract.pt",
    )
    assert (writer.readable(), writer.seekable(), writer.writable()) == (False, False, True)
    retained = bytes(range(256)) * 1024
    with writer:
        assert writer.write(b"head") == 4
        assert writer.write_retained(retained) == len(retained)  # the contract's retained write
        assert writer.tell() == 4 + len(retained)
    assert writer.closed
    assert not writer.writable()
    stored = boto3_s3.get_object(Bucket=bucket, Key="contract.pt")["Body"].read()
    assert stored == b"head" + retained
    with pytest.raises(ValueError, match="closed S3Writer"):
        writer.write_retained(b"more")


def test_a_checkpoint_writer_left_by_an_exception_writes_nothing(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any, s3_state: Any
) -> None:
    writer = checkpoint.writer(f"s3://{bucket}/k.pt")

    def write_then_fail() -> None:
        with writer:
            writer.write_retained(b"x" * (6 * 1024 * 1024))  # more than a part: multipart
            raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        write_then_fail()
    assert writer.closed
    assert s3_state(boto3_s3, bucket) == ([], [])


def test_torch_save_into_a_writer_without_a_with_block_publishes_the_object(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    uri = f"s3://{bucket}/plain.pt"
    writer = checkpoint.writer(uri)
    torch.save({"x": torch.arange(10)}, writer)
    assert writer.closed  # completed by torch.save's own final flush
    head = boto3_s3.head_object(Bucket=bucket, Key="plain.pt")
    assert head["ContentLength"] == writer.tell() > 0
    torch.save({"y": torch.arange(3)}, checkpoint.writer(f"s3://{bucket}/oneliner.pt"))
    assert torch.equal(
        torch.load(checkpoint.reader(f"s3://{bucket}/oneliner.pt"))["y"], torch.arange(3)
    )


def test_map_location_and_weights_only(checkpoint: S3Checkpoint, bucket: str) -> None:
    uri = f"s3://{bucket}/m.pt"
    with checkpoint.writer(uri) as writer:
        torch.save({"t": torch.ones(4, dtype=torch.float16)}, writer)
    with checkpoint.reader(uri) as reader:
        loaded = torch.load(reader, map_location="cpu", weights_only=True)
    assert loaded["t"].device == torch.device("cpu")
    assert loaded["t"].dtype == torch.float16
    with checkpoint.reader(uri) as reader:
        moved = torch.load(reader, map_location=lambda storage, location: storage)
    assert torch.equal(moved["t"], torch.ones(4, dtype=torch.float16))


def test_weights_only_default_refuses_arbitrary_objects(
    checkpoint: S3Checkpoint, bucket: str
) -> None:
    uri = f"s3://{bucket}/obj.pt"
    with checkpoint.writer(uri) as writer:
        torch.save({"callback": io.BytesIO}, writer)
    with (
        checkpoint.reader(uri) as reader,
        pytest.raises(Exception, match="Weights only load failed"),
    ):
        torch.load(reader)
    with checkpoint.reader(uri) as reader:
        assert torch.load(reader, weights_only=False)["callback"] is io.BytesIO


def test_settings_are_readable(s3_region: str, s3_endpoint: str) -> None:
    config = S3ClientConfig(part_size=16 * 1024**2)
    constructor = S3ReaderConstructor.range_based()
    with S3Checkpoint(
        s3_region, endpoint=s3_endpoint, s3client_config=config, reader_constructor=constructor
    ) as checkpoint:
        assert checkpoint.region == s3_region
        assert checkpoint.endpoint == s3_endpoint
        assert checkpoint.s3client_config is config
        assert checkpoint.reader_constructor is constructor
        assert isinstance(checkpoint.client, S3Client)
        assert checkpoint.client.endpoint == s3_endpoint
    assert checkpoint.client.closed  # it made the client, so it closed it
    default = S3Checkpoint(s3_region)
    assert default.endpoint is None
    assert default.s3client_config == S3ClientConfig()
    assert default.reader_constructor is None


def test_s3torchconnector_positional_order_works(
    s3_region: str, s3_endpoint: str, bucket: str
) -> None:
    """``S3Checkpoint(region, endpoint, s3client_config)``, as ported code writes it."""
    config = S3ClientConfig(part_size=16 * 1024**2)
    with S3Checkpoint(s3_region, s3_endpoint, config) as checkpoint:
        assert (checkpoint.endpoint, checkpoint.s3client_config) == (s3_endpoint, config)
        with checkpoint.writer(f"s3://{bucket}/p.pt") as writer:
            torch.save({"w": torch.arange(4)}, writer)
        with checkpoint.reader(f"s3://{bucket}/p.pt") as reader:
            assert torch.equal(torch.load(reader)["w"], torch.arange(4))
    with pytest.raises(TypeError):
        S3Checkpoint(s3_region, s3_endpoint, config, None)  # type: ignore[misc]


def test_a_given_client_is_used_and_left_open(
    make_client: Any, s3_region: str, bucket: str
) -> None:
    client = make_client()
    with S3Checkpoint(s3_region, client=client) as checkpoint:
        assert checkpoint.client is client
        assert checkpoint.endpoint == client.endpoint
        with checkpoint.writer(f"s3://{bucket}/c.pt") as writer:
            torch.save([1, 2], writer)
    assert not client.closed
    assert client.head_object(bucket, "c.pt").size > 0


def test_a_given_client_must_fit(make_client: Any, s3_region: str, s3_endpoint: str) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="either client or endpoint"):
        S3Checkpoint(s3_region, endpoint=s3_endpoint, client=client)
    with pytest.raises(ValueError, match="either client or endpoint"):
        S3Checkpoint(s3_region, s3client_config=S3ClientConfig(), client=client)
    with pytest.raises(ValueError, match="eu-west-1"):
        S3Checkpoint("eu-west-1", client=client)
    with pytest.raises(TypeError, match="client must be an S3Client"):
        S3Checkpoint(s3_region, client="not a client")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "constructor", [S3ReaderConstructor.sequential(), S3ReaderConstructor.range_based()]
)
def test_a_reader_constructor_chooses_the_reader(
    s3_region: str, s3_endpoint: str, bucket: str, constructor: Any
) -> None:
    checkpoint = S3Checkpoint(s3_region, endpoint=s3_endpoint, reader_constructor=constructor)
    uri = f"s3://{bucket}/r.pt"
    with checkpoint.writer(uri) as writer:
        torch.save({"a": torch.arange(100)}, writer)
    with checkpoint.reader(uri) as reader:
        expected = SequentialS3Reader if constructor.type_string == "sequential" else RangedS3Reader
        assert type(reader) is expected
        assert torch.equal(torch.load(reader)["a"], torch.arange(100))


BAD_URIS = [
    "s3://",
    "s3:///key",
    "S3://bucket/key",
    "http://bucket/key",
    "bucket/key",
    "",
    "s3://bucket",
    "s3://bucket/",
]


@pytest.mark.parametrize("uri", BAD_URIS)
def test_malformed_uris_are_refused_at_once(checkpoint: S3Checkpoint, uri: str) -> None:
    with pytest.raises(ValueError, match="Invalid") as caught:
        checkpoint.writer(uri)
    assert repr(uri) in str(caught.value)
    with pytest.raises(ValueError, match="Invalid") as caught:
        checkpoint.reader(uri)
    assert repr(uri) in str(caught.value)


def test_a_missing_key_or_bucket_is_a_typed_not_found_error(
    checkpoint: S3Checkpoint, bucket: str
) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        torch.load(checkpoint.reader(f"s3://{bucket}/missing.pt"))
    assert isinstance(caught.value, FileNotFoundError)
    assert (caught.value.bucket, caught.value.key) == (bucket, "missing.pt")
    assert f"s3://{bucket}/missing.pt" in str(caught.value)

    with pytest.raises(S3NotFoundError) as caught:
        torch.load(checkpoint.reader("s3://no-such-bucket-here/x.pt"))
    assert (caught.value.bucket, caught.value.key) == ("no-such-bucket-here", "x.pt")

    with (
        pytest.raises(S3NotFoundError) as caught,
        checkpoint.writer("s3://no-such-bucket-here/y.pt") as writer,
    ):
        torch.save({"a": 1}, writer)
    assert (caught.value.bucket, caught.value.key) == ("no-such-bucket-here", "y.pt")


def _saved_bytes(state: Any, **options: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer, **options)
    return buffer.getvalue()


_SAFETENSORS_HEAD = (30).to_bytes(8, "little") + b'{"w":{"dtype":"F32","shape":[1]}}'


@pytest.mark.parametrize(
    ("content", "looks_like", "expected"),
    [
        (b"", "empty", r"is not a checkpoint: the object is empty \(0 bytes\)"),
        (
            b"hello, world: just text",
            "text",
            r"start with 68 65 6c 6c 6f 2c .*\(b'hello, world: ju'\), which looks like text",
        ),
        (("é" * 10).encode()[:19], "text", "looks like text"),  # cut inside a character
        (b"\x00" * 4096, "binary data of no format s3torch recognises", r"start with 00 00 00"),
        (
            bytes(range(200, 256)) * 20,
            "binary data of no format s3torch recognises",
            "start with c8 c9 ca cb",
        ),
        (gzip.compress(b"state"), "gzip-compressed data", "start with 1f 8b"),
        (pickle.dumps({"w": [1.0]}), "a pickle that torch.save did not write", "start with 80"),
        (_SAFETENSORS_HEAD, "a safetensors file", "start with 1e 00"),
        (b"PK\x03\x04" + b"\x00" * 100, "a zip archive cut short", r"is a truncated zip archive"),
    ],
    ids=[
        "empty",
        "text",
        "utf8-cut",
        "zeros",
        "binary",
        "gzip",
        "plain-pickle",
        "safetensors",
        "zip-without-end",
    ],
)
def test_an_object_that_is_not_a_checkpoint_is_named_before_torch_sees_it(
    checkpoint: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    content: bytes,
    looks_like: str,
    expected: str,
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="odd.pt", Body=content)
    uri = f"s3://{bucket}/odd.pt"
    with pytest.raises(NotACheckpointError, match=expected) as caught:
        torch.load(checkpoint.reader(uri))
    error = caught.value
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{uri} is ")
    assert (error.uri, error.size, error.head) == (uri, len(content), content[:16])
    assert error.looks_like is not None
    assert error.looks_like.startswith(looks_like)
    # It crosses process boundaries: pickled whole, or rebuilt from its message.
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.uri, copy.head, copy.looks_like) == (
        NotACheckpointError,
        str(error),
        uri,
        content[:16],
        error.looks_like,
    )
    assert str(type(error)(str(error))) == str(error)


class _ObjectsDataset(torch.utils.data.Dataset[Any]):
    def __init__(self, checkpoint: S3Checkpoint, uri: str) -> None:
        self.checkpoint = checkpoint
        self.uri = uri

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Any:
        return torch.load(self.checkpoint.reader(self.uri))


def test_a_dataloader_worker_reraises_it_by_type_with_the_uri(
    s3_region: str, s3_endpoint: str, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="notes.pt", Body=b"epoch 3 was fine\n")
    uri = f"s3://{bucket}/notes.pt"
    loader = torch.utils.data.DataLoader(
        _ObjectsDataset(S3Checkpoint(s3_region, s3_endpoint), uri),
        num_workers=1,
        collate_fn=lambda batch: batch,
    )
    with pytest.raises(NotACheckpointError, match=f"{uri} is not a checkpoint.*looks like text"):
        next(iter(loader))


def test_a_checkpoint_cut_short_is_named_as_truncated(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    whole = _saved_bytes({"w": torch.arange(100_000)})
    boto3_s3.put_object(Bucket=bucket, Key="cut.pt", Body=whole[: len(whole) * 2 // 3])
    with pytest.raises(
        NotACheckpointError, match=rf"s3://{bucket}/cut.pt is a truncated zip archive"
    ):
        torch.load(checkpoint.reader(f"s3://{bucket}/cut.pt"))


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_legacy_checkpoint_cut_short_fails_in_torch(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any, protocol: int
) -> None:
    # The legacy format (pickles, then raw storages) has no end record to check:
    # what torch says depends on the cut, and does not name the object.
    whole = _saved_bytes(
        {"w": torch.arange(1000)}, _use_new_zipfile_serialization=False, pickle_protocol=protocol
    )
    boto3_s3.put_object(Bucket=bucket, Key="cut.pt", Body=whole[: len(whole) - 10])
    with pytest.raises(RuntimeError, match="unexpected EOF"):
        torch.load(checkpoint.reader(f"s3://{bucket}/cut.pt"))


def test_every_format_torch_load_reads_still_loads(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    state = {"w": torch.arange(1000), "step": 7}
    formats = {
        "zip.pt": _saved_bytes(state),
        "legacy.pt": _saved_bytes(state, _use_new_zipfile_serialization=False),
        "legacy-5.pt": _saved_bytes(state, _use_new_zipfile_serialization=False, pickle_protocol=5),
    }
    for key, content in formats.items():
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=content)
        # torch's weights_only unpickler does not take protocol 5's FRAME opcode
        weights_only = key != "legacy-5.pt"
        loaded = torch.load(checkpoint.reader(f"s3://{bucket}/{key}"), weights_only=weights_only)
        assert torch.equal(loaded["w"], state["w"]), key
        assert loaded["step"] == 7
