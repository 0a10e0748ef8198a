"""S3TarWriter: write samples into WebDataset-style tar shards on S3.

Each shard is streamed to S3 through the client's :class:`~s3torch.client.S3Writer`
while samples are written (no local file, no other tool), and appears whole
when it is completed: a shard aborted (an exception, :meth:`S3TarWriter.abort`)
leaves no object and no open multipart upload.

A shard is a plain POSIX tar (PAX headers where a name needs them), one
member per field: ``{key}.{extension}`` (see :mod:`._tar_names`), a regular
file, mode ``0o644``, the writer's one mtime, then its bytes, zero-padded to
512 bytes; the end-of-archive marker (two zero blocks) closes the shard.
"""

from __future__ import annotations

import logging
import tarfile
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, NoReturn

from s3torch.client import (
    S3Client,
    S3ClientConfig,
    S3Writer,
    check_shared_client,
    require_int,
)

from ._shard_pattern import parse_shard_pattern
from ._tar_names import METADATA_PREFIX, check_extension, check_key

__all__ = ["BLOCK_SIZE", "MIN_SHARD_SIZE", "S3TarWriter"]

log = logging.getLogger(__name__)

BLOCK_SIZE = 512
"""A tar block: headers are whole blocks, and each member's data is padded to one."""

_END_OF_ARCHIVE = bytes(2 * BLOCK_SIZE)
_PADDING = memoryview(bytes(BLOCK_SIZE))

MIN_SHARD_SIZE = 3 * BLOCK_SIZE
"""The smallest shard: one header (of an empty member) and the end-of-archive marker."""

MEMBER_MODE = 0o644
"""The permission bits of every member."""


class S3TarWriter:
    """Write samples into tar shards ``pattern % index`` on S3, starting a new one as each fills.

    ::

        with S3TarWriter("s3://my-bucket/train/shard-%06d.tar", region="us-east-1",
                         max_size=256 * 1024**2) as writer:
            for key, image, label in samples:
                writer.write({"__key__": key, "jpg": image, "cls": str(label)})
        print(writer.uris)  # the shards written, in order

    A new shard starts before a sample that would take the current one past
    ``max_size`` bytes (a sample bigger than that on its own gets a shard of
    its own), and after ``max_count`` samples. Shards are numbered from
    ``start_index`` up, one after another; each is completed (appears on S3,
    whole, and is added to :attr:`uris`) as soon as it is full or the next
    sample does not fit, and the last by :meth:`close`.

    Leaving a ``with`` block through an exception (Ctrl-C included), calling
    :meth:`abort`, or any failure of a write aborts the shard being written:
    it leaves no object and no open multipart upload. Shards completed before
    it stay on S3 and in :attr:`uris`; a rerun can overwrite them, or go on
    from the next index. One shard can be in doubt: a Ctrl-C that lands while
    its completing request is in flight leaves it on S3 whole or not at all
    (as any interrupted upload), and :attr:`uris` does not list it.

    The writer is not thread-safe (one thread writes) and cannot be pickled.

    Args:
        pattern: ``s3://bucket/key`` with one printf-style integer field in the
            key (``%06d``, as WebDataset's ``ShardWriter``), filled with the shard index.
        region: The bucket's region.
        endpoint: A custom S3 endpoint (``http://127.0.0.1:9000``, say).
        s3client_config: Settings of the client made for the writer.
        client: An :class:`S3Client` to use (and leave open) instead of making one.
        max_size: The most bytes a shard holds, headers and end marker
            included, unless one sample alone is bigger (at least
            :data:`MIN_SHARD_SIZE`).
        max_count: The most samples a shard holds (at least 1).
        start_index: The index of the first shard (at least 0).
        mtime: The modification time of every member, in seconds since the
            epoch; by default the time the writer was made. Give one to make
            shards that are byte-for-byte the same for the same samples.

    Raises:
        ValueError: a bad pattern, setting or client (the message names it).
        TypeError: ``client`` is not an :class:`S3Client`.
    """

    def __init__(
        self,
        pattern: str,
        region: str,
        *,
        endpoint: str | None = None,
        s3client_config: S3ClientConfig | None = None,
        client: S3Client | None = None,
        max_size: int = 1 << 30,
        max_count: int = 100_000,
        start_index: int = 0,
        mtime: int | None = None,
    ) -> None:
        self._bucket, self._key_pattern = parse_shard_pattern(pattern)
        require_int("max_size", max_size, minimum=MIN_SHARD_SIZE)
        require_int("max_count", max_count, minimum=1)
        require_int("start_index", start_index)
        require_int("mtime", mtime, optional=True)
        if not isinstance(region, str) or not region:
            raise ValueError(f"region must be a non-empty string, got {region!r}")
        check_shared_client(
            client, region=region, endpoint=endpoint, s3client_config=s3client_config
        )
        self._pattern = pattern
        self._max_size = max_size
        self._max_count = max_count
        self._mtime = int(time.time()) if mtime is None else mtime
        self._owns_client = client is None
        self._client = client or S3Client(
            region, endpoint=endpoint, s3client_config=s3client_config
        )
        self._index = start_index
        self._shard: S3Writer | None = None
        self._shard_samples = 0
        self._shard_bytes = 0  # without the end-of-archive marker
        self._last_key: str | None = None
        self._uris: list[str] = []
        self._closed = False

    # -------------------------------------------------------------------- what
    @property
    def uris(self) -> list[str]:
        """The URIs of the shards completed so far, in order (a copy)."""
        return list(self._uris)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` ran, or a write failed (it takes no more)."""
        return self._closed

    @property
    def mtime(self) -> int:
        """The modification time of every member written (seconds since the epoch)."""
        return self._mtime

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._shard is not None:
            state = (
                f"writing {self._shard.uri} "
                f"({self._shard_samples} samples, {self._shard_bytes} bytes)"
            )
        else:
            state = f"next shard {self._uri(self._index)}"
        return f"<S3TarWriter {self._pattern!r}: {len(self._uris)} shards completed, {state}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"an S3TarWriter cannot be pickled (it writes {self._pattern!r})")

    # ----------------------------------------------------------------- writing
    def write(self, sample: Mapping[str, Any]) -> str:
        """Add ``sample`` to the current shard (or a new one); return that shard's URI.

        ``sample["__key__"]`` (a non-empty ``str``; its basename holds no
        ``"."``, and it does not start with ``"/"``) names the sample; every
        other field ``extension -> value``, in the sample's order, becomes the
        member ``{key}.{extension}`` holding ``value``: bytes-like (``bytes``,
        ``bytearray``, ``memoryview``, any buffer) or ``str`` (written as
        UTF-8). Fields starting with ``"__"`` (``__url__`` of a sample read
        back, say) are not written. A key must differ from the one before it
        in the same shard: readers group consecutive members by key.

        Raises:
            TypeError: a field or ``__key__`` of the wrong type (named).
            ValueError: a bad key or field name (named), a sample with no
                field to write, the same key twice in a row, or a closed
                writer. Nothing of the sample was written.
            S3Exception: the upload failed: the current shard was aborted and
                the writer closed (shards completed before stay).
        """
        if self._closed:
            raise ValueError(f"write to a closed S3TarWriter ({self._pattern!r})")
        key, members = self._members(sample)
        size = sum(len(header) + len(data) + padding for header, data, padding in members)
        fits = self._shard_bytes + size + len(_END_OF_ARCHIVE) <= self._max_size
        if self._shard is not None and fits and key == self._last_key:
            raise ValueError(
                f"sample {key!r} has the same __key__ as the sample before it in "
                f"{self._shard.uri}: readers would merge the two"
            )
        if self._shard is not None and not fits:
            self._complete()
        shard = self._shard
        try:
            if shard is None:
                shard = self._shard = self._client.put_object(self._bucket, self._key(self._index))
            for header, data, padding in members:
                shard.write(header)
                shard.write(data)  # the caller's buffer: kept as a view where it is immutable
                if padding:
                    shard.write(_PADDING[:padding])
        except BaseException:
            self._fail()
            raise
        uri = shard.uri
        self._shard_samples += 1
        self._shard_bytes += size
        self._last_key = key
        if (
            self._shard_samples >= self._max_count
            or self._shard_bytes + BLOCK_SIZE + len(_END_OF_ARCHIVE) > self._max_size
        ):
            self._complete()  # full: no other sample fits
        return uri

    def _members(self, sample: Mapping[str, Any]) -> tuple[str, list[tuple[bytes, Any, int]]]:
        """``(key, [(header, data, padding), ...])`` of ``sample``, every field checked."""
        if not isinstance(sample, Mapping):
            raise TypeError(f"a sample must be a mapping (a dict), got {type(sample).__name__}")
        if "__key__" not in sample:
            raise ValueError(f"sample has no '__key__' (fields: {sorted(map(str, sample))})")
        key = check_key(sample["__key__"])
        members = []
        for extension, value in sample.items():
            if isinstance(extension, str) and extension.startswith(METADATA_PREFIX):
                continue
            check_extension(key, extension)
            data = _bytes_of(key, extension, value)
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(data)
            info.mode = MEMBER_MODE
            info.mtime = self._mtime
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8")
            members.append((header, data, -len(data) % BLOCK_SIZE))
        if not members:
            raise ValueError(f"sample {key!r} has no field to write (only {sorted(sample)})")
        return key, members

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Complete the current shard (none is made if nothing was written to it). Idempotent.

        A client made by the writer is closed; a client given is left open.

        Raises:
            S3Exception: completing the shard failed: it was aborted.
        """
        if self._closed:
            return
        try:
            if self._shard is not None:
                self._complete()
        finally:
            self._closed = True
            self._release()

    def abort(self) -> None:
        """Give up the current shard (no object, no open upload) and close. Idempotent.

        Shards completed before stay on S3 and in :attr:`uris`.
        """
        if self._closed:
            return
        self._closed = True
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                shard.abort()
                log.debug("aborted %s", shard.uri)
        finally:
            self._release()

    def __enter__(self) -> S3TarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close, or abort the current shard if the block raised (that exception propagates)."""
        if exc_type is None:
            self.close()
        else:
            self._fail()  # the block's own exception is the one to see

    # ---------------------------------------------------------------- internal
    def _key(self, index: int) -> str:
        return str(self._key_pattern % index)

    def _uri(self, index: int) -> str:
        return f"s3://{self._bucket}/{self._key(index)}"

    def _complete(self) -> None:
        """End the current shard with the end-of-archive marker and publish it."""
        shard = self._shard
        assert shard is not None
        try:
            shard.write(_END_OF_ARCHIVE)
            shard.close()
        except BaseException:
            self._fail()
            raise
        self._shard = None
        self._uris.append(shard.uri)
        log.debug(
            "completed %s: %d samples, %d bytes", shard.uri, self._shard_samples, shard.tell()
        )
        self._index += 1
        self._shard_samples = 0
        self._shard_bytes = 0
        self._last_key = None

    def _fail(self) -> None:
        """Abort the current shard and close, logging (never raising) a failure to abort."""
        shard = self._shard
        try:
            self.abort()
        except Exception as error:
            uri = self._pattern if shard is None else shard.uri
            log.warning("could not abort the upload of %s: %s", uri, error)

    def _release(self) -> None:
        if self._owns_client:
            self._client.close()


def _bytes_of(key: str, extension: str, value: object) -> bytes | memoryview:
    """``value`` as bytes to write: ``str`` encoded as UTF-8, a buffer as a flat view of it."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"sample {key!r}: field {extension!r} is not valid UTF-8: {error}"
            ) from error
    if isinstance(value, bytes):
        return value
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"sample {key!r}: field {extension!r} must be bytes-like or str, "
            f"got {type(value).__name__}"
        ) from None
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
