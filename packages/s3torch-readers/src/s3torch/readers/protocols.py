"""What readers need of a client: the raw, streamed GET (and HEAD), as protocols.

Readers work with any object that provides these methods, not only
:class:`s3torch.client.S3Client`: a wrapper that counts, logs, caches or
injects faults, or a client of your own. ``S3Client`` and the ``ObjectStream``
its ``get_object_stream`` returns satisfy them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from s3torch.client import ObjectInfo, S3ClientConfig

__all__ = ["RawGetClient", "RawGetStream"]


@runtime_checkable
class RawGetStream(Protocol):
    """A streamed GET of one object or byte range, as ``S3Client.get_object_stream`` returns.

    Bytes arrive in order from the range's start; ``readinto`` and ``skip``
    return fewer bytes than asked only at the end of the range, and 0 there.
    """

    @property
    def object_info(self) -> ObjectInfo:
        """Size and ETag of the whole object (waits for the first response)."""
        ...

    @property
    def position(self) -> int:
        """The offset in the object of the next byte to be read."""
        ...

    def __next__(self) -> bytes | memoryview:
        """The next chunk of bytes as it arrived; ``StopIteration`` at the end."""
        ...

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into ``buffer`` until it is full or the range ends."""
        ...

    def skip(self, size: int) -> int:
        """Move ``size`` bytes forward without copying them; return how many were skipped."""
        ...

    def close(self) -> None:
        """Cancel what is still in flight. Idempotent."""
        ...


@runtime_checkable
class RawGetClient(Protocol):
    """A client readers can read through: :class:`s3torch.client.S3Client` or your own.

    Readers call ``get_object_stream`` for every GET (whole object or byte
    range, ``etag`` pinning the version), ``head_object`` when they need the
    size before any GET, and read ``s3client_config.part_size`` and
    ``.readahead_parts`` to plan the DCP reader's ranged GETs. A reader
    pickles its client with it, so a client used by DataLoader workers must
    pickle (``S3Client`` pickles as its configuration).
    """

    @property
    def s3client_config(self) -> S3ClientConfig:
        """The configuration: part size and read-ahead shape the DCP reader's requests."""
        ...

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Size and ETag of ``s3://bucket/key``."""
        ...

    def get_object_stream(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        object_info: ObjectInfo | None = None,
        etag: str | None = None,
    ) -> RawGetStream:
        """Start a streamed GET of ``s3://bucket/key`` (bytes ``[start, end)`` of it)."""
        ...
