"""S3Writer is the writer contract: an abstract file object that the client's upload implements.

The contract's own logic (the ``with`` block, ``write``/``write_retained``,
the file protocol, pickling, garbage collection) is tested on a minimal
in-memory implementation; the client's writer is tested against S3.
"""

from __future__ import annotations

import gc
import io
import pickle
from typing import Any

import pytest

from s3torch.client import S3Client, S3Writer


class _Recording(S3Writer):
    """The least an implementation provides; records what the contract calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.data = bytearray()
        self._closed = False

    @property
    def bucket(self) -> str:
        return "b"

    @property
    def key(self) -> str:
        return "k"

    @property
    def closed(self) -> bool:
        return self._closed

    def tell(self) -> int:
        return len(self.data)

    def _write(self, data: Any, *, retained: bool) -> int:
        if self._closed:
            raise ValueError("closed")
        self.calls.append(("write", retained))
        self.data += memoryview(data).cast("B")
        return memoryview(data).nbytes

    def close(self) -> None:
        self.calls.append(("close", None))
        self._closed = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self._closed = True


def test_s3writer_is_abstract_and_names_what_an_implementation_provides() -> None:
    with pytest.raises(TypeError, match="abstract") as raised:
        S3Writer()  # type: ignore[abstract]
    for name in ("_write", "abort", "bucket", "close", "closed", "key", "tell"):
        assert name in str(raised.value)
    assert issubclass(S3Writer, io.BufferedIOBase)


def test_the_contract_routes_writes_and_describes_a_write_only_file() -> None:
    writer = _Recording()
    assert writer.write(b"ab") == 2
    assert writer.write_retained(memoryview(b"cde")) == 3
    assert writer.calls == [("write", False), ("write", True)]
    assert (writer.tell(), bytes(writer.data), writer.uri) == (5, b"abcde", "s3://b/k")
    assert (writer.readable(), writer.seekable(), writer.writable()) == (False, False, True)
    writer.flush()
    with pytest.raises(io.UnsupportedOperation):
        writer.read()
    writer.close()
    assert not writer.writable()


def test_leaving_a_with_block_closes_and_an_exception_aborts_and_propagates() -> None:
    with _Recording() as done:
        done.write(b"x")
    assert done.calls[-1] == ("close", None)
    failing = _Recording()

    def write_then_fail(writer: S3Writer) -> None:
        with writer:
            writer.write(b"x")
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        write_then_fail(failing)
    assert failing.calls == [("write", False), ("abort", None)]


def test_an_abort_that_fails_in_a_with_block_lets_the_blocks_own_error_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AbortFails(_Recording):
        def abort(self) -> None:
            raise OSError("server gone")

    with pytest.raises(KeyError, match="boom"), AbortFails():
        raise KeyError("boom")
    assert "could not abort the upload of s3://b/k: server gone" in caplog.text


def test_a_dropped_writer_is_never_completed_nor_pickled() -> None:
    writer = _Recording()
    calls = writer.calls
    with pytest.raises(
        TypeError, match=r"an S3Writer cannot be pickled \(_Recording of s3://b/k\)"
    ):
        pickle.dumps(writer)
    del writer
    gc.collect()
    assert calls == []  # io.IOBase would have called close(), publishing it


def test_the_clients_writer_is_an_s3writer(client: S3Client, bucket: str, boto3_s3: Any) -> None:
    writer = client.put_object(bucket, "contract")
    assert isinstance(writer, S3Writer)
    assert (writer.bucket, writer.key, writer.uri) == (
        bucket,
        "contract",
        f"s3://{bucket}/contract",
    )
    with writer:
        assert writer.write(b"abc") == 3
        assert writer.write_retained(b"def" * 30_000) == 90_000
        assert writer.tell() == 90_003
    assert writer.closed
    body = boto3_s3.get_object(Bucket=bucket, Key="contract")["Body"].read()
    assert body == b"abc" + b"def" * 30_000
