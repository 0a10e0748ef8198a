"""S3Reader: the read-only, seekable file object every reader kind is."""

from __future__ import annotations

import abc
import contextlib
import io
import operator
import sys
from collections.abc import Iterator
from typing import Any

from s3torch.client import ObjectInfo, S3PreconditionFailedError

from .protocols import RawGetClient

__all__ = ["S3Reader"]

_WHENCE = {io.SEEK_SET: "SEEK_SET", io.SEEK_CUR: "SEEK_CUR", io.SEEK_END: "SEEK_END"}


class S3Reader(io.BufferedIOBase, abc.ABC):
    """A read-only, seekable file object over one S3 object.

    The file protocol is the same for every reader kind: ``read``,
    ``readinto``, ``seek`` (``SEEK_SET``, ``SEEK_CUR``, ``SEEK_END``), ``tell``,
    ``close`` and use as a context manager. Seeks and reads past the end
    behave as in ``io.BytesIO``: the position moves there, ``tell`` reports
    it, reads return ``b""``. What differs is how bytes are fetched, which
    each subclass decides.

    The object's size comes from the ``object_info`` given (a listing or a
    HEAD, so no extra request), otherwise from the first GET's response or,
    if nothing has been read yet, a HEAD. Readers are not thread-safe: use one
    per thread; the exception is ``close``, which another thread may call
    while a read is in progress (that read then raises ``ValueError``). They
    pickle as their client, the object's name and info, and the position.

    ``client`` is an :class:`s3torch.client.S3Client` or any object that
    provides the raw GET (:class:`~s3torch.readers.RawGetClient`).
    """

    def __init__(
        self,
        client: RawGetClient,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(client, RawGetClient):
            raise TypeError(
                "client must provide get_object_stream, head_object and s3client_config "
                f"(an s3torch.client.S3Client or a s3torch.readers.RawGetClient), got {client!r}"
            )
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty string, got {bucket!r}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string (bucket {bucket!r}), got {key!r}")
        if object_info is not None and (object_info.bucket, object_info.key) != (bucket, key):
            raise ValueError(
                f"object_info describes s3://{object_info.bucket}/{object_info.key}, "
                f"not s3://{bucket}/{key}"
            )
        self._client = client
        self._bucket = bucket
        self._key = key
        self._info = object_info
        # The size a listing or manifest gave: the object must still have it.
        self._described_size = object_info.size if object_info is not None else None
        self._position = 0
        self._closing = False  # set before close() frees anything, for reads racing it
        # An error a read raised into torch's C++ file adapter, which would
        # mangle it: kept for the call that torch makes next (see readinto).
        self._deferred_error: BaseException | None = None

    # ----------------------------------------------------------------- what
    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key(self) -> str:
        return self._key

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    @property
    def size(self) -> int:
        """The object's size in bytes (may ask S3 the first time)."""
        if self._info is None:
            self._info = self._discover_info()
        return self._info.size

    def _discover_info(self) -> ObjectInfo:
        """Learn size and ETag; subclasses with a response at hand override this."""
        return self._client.head_object(self._bucket, self._key)

    def _check_described_size(self, reported: ObjectInfo) -> None:
        """Raise if the server's object is not the size the ``object_info`` given said.

        The bytes of an object of another size than its listing (or manifest)
        says are never handed out: the reader would cut them short or wait for
        bytes that do not come. (With the ``object_info``'s ETag, every GET
        also carries ``If-Match``: a changed object usually fails with a 412
        before this.)

        Raises:
            S3PreconditionFailedError: the sizes differ (code ``SizeMismatch``).
        """
        expected = self._described_size
        if expected is None:
            return
        if reported.size == expected:
            self._described_size = None  # checked: once per reader is enough
            return
        raise S3PreconditionFailedError(
            f"the object has {reported.size} bytes, but {expected} were expected "
            "(the listing or manifest that described it is out of date)",
            operation="GetObject",
            bucket=self._bucket,
            key=self._key,
            code="SizeMismatch",
        )

    def prefetch(self) -> None:
        """Start downloading now, without waiting, so that a later read finds bytes ready.

        Datasets call it on the next few objects while you consume the current
        one. The sequential reader starts its streamed GET (read ahead within
        the client's memory budget); readers that fetch only what each read
        asks for do nothing until that read. Idempotent.
        """
        self._check_open()

    # ---------------------------------------------------- how (per reader kind)
    @abc.abstractmethod
    def _read_at(self, position: int, size: int) -> bytes:
        """Return the ``size`` bytes at ``position`` (fewer only at the end of the object)."""

    def _readinto_at(self, position: int, view: memoryview) -> int:
        """Copy the bytes at ``position`` into ``view``; return how many."""
        data = self._read_at(position, len(view))
        view[: len(data)] = data
        return len(data)

    def _release(self) -> None:
        """Free streams and buffers (called once, by ``close``)."""

    # --------------------------------------------------------- file protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        """The current position."""
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        """Move to ``offset`` relative to ``whence``; return the new position.

        As in ``io.BytesIO``, a position past the end is allowed: reads there
        return ``b""``. Only ``SEEK_END`` needs the object's size.

        Raises:
            TypeError: ``offset`` or ``whence`` is not an integer.
            ValueError: an unknown ``whence``, or a negative resulting position.
        """
        self._check_open()
        if isinstance(whence, bool) or not isinstance(whence, int):
            raise TypeError(
                f"whence must be an integer (os.SEEK_SET, SEEK_CUR or SEEK_END), got {whence!r}"
            )
        if isinstance(offset, bool):
            raise TypeError(f"seek offset must be an integer, got {offset!r}")
        try:
            offset = operator.index(offset)
        except TypeError:
            raise TypeError(f"seek offset must be an integer, got {offset!r}") from None
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(
                f"whence must be os.SEEK_SET (0), SEEK_CUR (1) or SEEK_END (2), got {whence!r}"
            )
        if target < 0:
            raise ValueError(
                f"negative seek position {target} ({_WHENCE[whence]} {offset}) in {self.uri}"
            )
        self._position = target
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes; all that remain if ``size`` is None or negative.

        Returns ``b""`` at the end of the object.
        """
        self._check_open()
        size = self._check_size(size)
        remaining = max(0, self.size - self._position)
        count = remaining if size < 0 else min(size, remaining)
        if count == 0:
            return b""
        with self._closing_guard():
            data = self._read_at(self._position, count)
        self._position += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        """Same as :meth:`read` (a reader has no raw stream beneath it)."""
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into ``buffer`` until it is full or the object ends.

        Errors are raised as themselves, including under ``torch.load``.
        torch's C++ file adapter calls ``readinto`` and, when it raises, looks
        up ``read`` with the error still pending, which turns any error
        (``KeyboardInterrupt`` included) into an ``AttributeError`` or a
        ``SystemError``. So when that adapter is the caller, recognised by the
        buffer it passes (a ``memoryview`` over raw memory, owned by no
        Python object) and by the Python code it was called from (a ``torch``
        module), the error is kept and ``readinto`` returns 0; the adapter
        then calls ``read``, which raises the kept error (it propagates from
        there unchanged). The reader fails closed: whatever the caller does
        next on it raises that error first.
        """
        try:
            return self._readinto(buffer)
        except BaseException as error:
            if _from_torch_file_adapter(buffer, sys._getframe(1).f_globals.get("__name__")):
                self._deferred_error = error
                return 0
            raise

    def _readinto(self, buffer: Any) -> int:
        """:meth:`readinto` itself (subclasses with their own rules override this)."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        count = min(len(view), max(0, self.size - self._position))
        if count == 0:
            return 0
        with self._closing_guard():
            written = self._readinto_at(self._position, view[:count])
        self._position += written
        return written

    def readinto1(self, buffer: Any) -> int:
        return self.readinto(buffer)

    def close(self) -> None:
        """Free the reader's streams and buffers. Idempotent."""
        if not self.closed:
            self._closing = True
            try:
                self._release()
            finally:
                super().close()

    def _check_open(self) -> None:
        """Raise an error kept for the caller (see :meth:`readinto`), or the closed error."""
        error = self._deferred_error
        if error is not None:
            self._deferred_error = None
            raise error
        if self.closed or self._closing:
            raise ValueError(f"I/O operation on a closed reader ({self.uri})")

    @contextlib.contextmanager
    def _closing_guard(self) -> Iterator[None]:
        """Turn whatever a read raises because ``close`` ran meanwhile into the closed error.

        Whatever it is: a reader's state torn down under a read can fail in
        many ways (an emptied deque, a released buffer, a cancelled request),
        and each is the same fact for the caller. The cause stays chained.
        """
        try:
            yield
        except Exception as error:
            if self._closing:
                raise ValueError(
                    f"I/O operation on a closed reader ({self.uri}): closed during the read"
                ) from error
            raise

    @staticmethod
    def _check_size(size: int | None) -> int:
        if size is None:
            return -1
        if isinstance(size, bool):
            raise TypeError(f"read size must be an integer or None, got {size!r}")
        try:
            return operator.index(size)
        except TypeError:
            raise TypeError(f"read size must be an integer or None, got {size!r}") from None

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "client": self._client,
            "bucket": self._bucket,
            "key": self._key,
            "object_info": self._info,
            "position": self._position,
            "closed": self.closed,
            "settings": self._settings(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["client"],
            state["bucket"],
            state["key"],
            state["object_info"],
            **state["settings"],
        )
        self._position = state["position"]
        if state["closed"]:
            self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # io.IOBase refuses to pickle; readers pickle as what is needed to reopen them.
        return (_rebuild, (type(self),), self.__getstate__())

    def _settings(self) -> dict[str, Any]:
        """Keyword arguments beyond client, bucket, key and object_info (for pickling)."""
        return {}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"at {self._position}"
        return f"<{type(self).__name__} {self.uri} {state}>"


def _rebuild(cls: type[S3Reader]) -> S3Reader:
    return cls.__new__(cls)


def _from_torch_file_adapter(buffer: object, caller_module: object) -> bool:
    """Whether a ``readinto`` call comes from torch's C++ file adapter (``torch.load``).

    The adapter passes a ``memoryview`` it made over raw memory (no Python
    object owns it: ``obj`` is None), and is called from torch's own Python
    code: no call from Python (a ``bytearray``, a NumPy array, a tensor's
    buffer: all have an owner) or from another C caller (``pickle``,
    ``io.BufferedReader``, called from code outside torch) matches both.
    """
    if not isinstance(buffer, memoryview):
        return False
    owner: object = buffer.obj  # None for a view over raw memory (typeshed says never None)
    return (
        owner is None
        and isinstance(caller_module, str)
        and (caller_module == "torch" or caller_module.startswith("torch."))
    )
