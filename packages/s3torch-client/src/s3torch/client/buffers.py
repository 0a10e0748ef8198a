"""FillableBytes: build a ``bytes`` object in place, front to back, then freeze it.

Python has no way to build a large ``bytes`` without a second copy: filling a
``bytearray`` and calling ``bytes()`` on it holds the data twice, and
``b"".join`` holds every chunk plus the result. CPython's C API can:
``PyBytes_FromStringAndSize(NULL, n)`` returns an object with uninitialised
storage for the caller to fill before anyone else sees it. This module does
that through ``ctypes``, so downloading N bytes costs N bytes of memory and one
copy, and skips the zero-filling a ``bytearray`` pays for. The readers package
and the client's streams build what they return with it; it is a supported
API of ``s3torch-client`` for the packages built on it.

Writing into an object Python believes immutable is only safe if nothing can
write after it is handed out, and nothing can write after it is freed. Both
are enforced here, never left to callers:

* The storage is reachable only through a writable ``memoryview`` lent to a
  ``source`` callable for the duration of one :meth:`FillableBytes.append_from`
  call. The view's exporter holds a reference to the ``bytes``: a view kept too
  long writes into live memory, never freed memory.
* When ``source`` returns, the lent view is revoked. If any view derived from
  it is still alive (a slice kept, a ``memoryview`` of it stored, or a frame
  of an exception holding it), the buffer is spoiled: :class:`BufferError`
  now, and it can never be frozen, so a ``bytes`` handed out never changes.
* :meth:`~FillableBytes.freeze` refuses while a fill is in progress, and
  returns exactly the bytes written (a copy of them if fewer than the size):
  uninitialised memory is never handed out.
* Nothing handed out leads to the unfinished ``bytes`` object: bytes written
  so far are copied out (:meth:`~FillableBytes.read_at`,
  :meth:`~FillableBytes.readinto_at`), and a lent view keeps the storage
  alive through a finalizer, not through a reference it could follow. So no
  one can watch that object change, or hash it (``bytes`` caches its hash)
  before it is finished.
* :meth:`~FillableBytes.close`, from any thread, ends the buffer: later fills
  raise ``ValueError``; a fill in progress finishes writing into memory that
  its view keeps alive, then raises.

Sizes below :data:`IN_PLACE_MIN_SIZE` (where a copy costs less than the
``ctypes`` machinery, and which include the sizes 0 and 1 whose ``bytes``
objects CPython shares) and interpreters other than CPython use a
``bytearray`` and copy it once when frozen, so a view kept there cannot
change the result either.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .settings import require_int

__all__ = ["IN_PLACE_MIN_SIZE", "FillableBytes"]

_IN_PLACE = platform.python_implementation() == "CPython"

if _IN_PLACE:
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _bytes_storage = ctypes.pythonapi.PyBytes_AsString
    _bytes_storage.restype = ctypes.c_void_p
    _bytes_storage.argtypes = (ctypes.py_object,)

# Below this size a bytearray copied once is cheaper than making a ctypes array
# type (tens of microseconds), and both fit in glibc's heap without an mmap.
IN_PLACE_MIN_SIZE = 128 * 1024
"""Sizes from this many bytes up are built in place; smaller ones in a ``bytearray`` copied once."""

_OPEN, _FROZEN, _CLOSED, _SPOILED = "open", "frozen", "closed", "spoiled"


def _let_go(target: bytes | bytearray) -> None:
    """Nothing to do: the finalizer of a fill's exporter only held ``target`` alive until now."""


@functools.lru_cache(maxsize=64)
def _array_type(size: int) -> type[ctypes.Array[ctypes.c_char]]:
    """``c_char * size``, kept for the sizes used most (ranged buffers, equal-sized shards)."""
    return ctypes.c_char * size


class FillableBytes:
    """A ``bytes`` of at most ``size`` bytes, appended to in place, then frozen.

    >>> buffer = FillableBytes(5)
    >>> buffer.append(b"he")
    >>> def source(view: memoryview) -> int:  # e.g. ObjectStream.readinto
    ...     view[:3] = b"llo"
    ...     return 3
    >>> buffer.append_from(source)
    3
    >>> buffer.freeze()
    b'hello'

    Writes happen only through :meth:`append` and :meth:`append_from`, one at
    a time; :meth:`read_at` and :meth:`readinto_at` copy out what is written
    so far (the unfinished ``bytes`` is never lent for reading).
    All methods are safe to call from any thread (a second fill while one is
    in progress raises ``BufferError`` rather than waiting); misuse raises, it
    never writes into memory that was freed or into a ``bytes`` already
    handed out.

    Args:
        size: The largest number of bytes the result can hold.
    """

    __slots__ = (
        "_address",
        "_array",
        "_filled",
        "_filling",
        "_lock",
        "_object",
        "_size",
        "_state",
        "_why",
    )

    def __init__(self, size: int) -> None:
        require_int("FillableBytes size", size)
        self._lock = threading.Lock()
        self._size = size
        self._filled = 0
        self._filling = False
        self._state = _OPEN
        self._why = ""
        self._object: bytes | bytearray
        self._array: type[ctypes.Array[ctypes.c_char]] | None = None
        self._address = 0
        if _IN_PLACE and size >= IN_PLACE_MIN_SIZE:
            self._object = _new_bytes(None, size)
            self._address = _bytes_storage(self._object)
            self._array = _array_type(size)
        else:
            self._object = bytearray(size)

    # ----------------------------------------------------------------- state
    @property
    def size(self) -> int:
        """The capacity given when the buffer was made."""
        return self._size

    @property
    def filled(self) -> int:
        """How many bytes are written."""
        return self._filled

    @property
    def remaining(self) -> int:
        """How many more bytes fit."""
        return self._size - self._filled

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a frozen buffer is not closed)."""
        return self._state == _CLOSED

    def _refuse(self, action: str) -> None:
        """Raise if the buffer cannot ``action`` now (call with the lock held)."""
        if self._state == _SPOILED:
            raise BufferError(f"cannot {action} a FillableBytes that was spoiled: {self._why}")
        if self._state != _OPEN:
            raise ValueError(f"cannot {action} a FillableBytes that is {self._state}")
        if self._filling:
            raise BufferError(f"cannot {action} a FillableBytes while a fill is in progress")

    # ---------------------------------------------------------------- writing
    def append(self, data: Any) -> None:
        """Copy the bytes-like ``data`` after what is written.

        Raises:
            ValueError: ``data`` does not fit, or the buffer is frozen or closed.
        """
        source = memoryview(data).cast("B")
        if len(source) > self.remaining:
            raise ValueError(
                f"{len(source)} bytes do not fit in a FillableBytes with {self.remaining} "
                f"of {self._size} bytes left"
            )

        def copy(view: memoryview) -> int:
            view[:] = source
            return len(view)

        self.append_from(copy, len(source))

    def append_from(self, source: Callable[[memoryview], int], limit: int | None = None) -> int:
        """Let ``source`` write the next bytes; return how many it wrote.

        ``source`` gets a writable view of the next ``min(limit, remaining)``
        bytes and returns how many of them, from the start, it filled (as
        ``readinto`` does). The view is lent for the call only: it must not be
        kept, nor any slice or view of it.

        Whatever ``source`` raises propagates, and spoils the buffer (the
        traceback may still hold the view).

        Raises:
            BufferError: ``source`` kept the view, or a slice or view of it:
                the buffer is spoiled, it can no longer be filled or frozen.
                Also, without spoiling anything, when another fill is in
                progress.
            ValueError: the buffer is frozen or closed (also when it was closed
                while ``source`` ran); ``source`` returned a count out of range
                (which spoils the buffer); a negative ``limit``.
        """
        require_int("limit", limit, optional=True)
        with self._lock:
            self._refuse("fill")
            start = self._filled
            length = self.remaining if limit is None else min(limit, self.remaining)
            if length == 0:
                return 0
            self._filling = True
            target = self._object
        reference, view = self._lend(target, start, length)
        del target
        count: Any = None
        raised = True
        try:
            count = source(view)
            raised = False
        finally:
            kept = self._revoke(reference, view)
            del view
            with self._lock:
                self._filling = False
                problem = self._settle(raised, kept, count, length)
        if problem is not None:
            raise problem
        return int(count)

    def _settle(self, raised: bool, kept: bool, count: Any, length: int) -> Exception | None:
        """Account for a fill that ended (lock held); the error to raise, if any."""
        if raised:
            self._spoil("a fill raised while its view was lent")
            return None  # its own exception propagates
        if kept:
            self._spoil("a view lent to a fill was kept after the fill returned")
            return BufferError(f"FillableBytes spoiled: {self._why}")
        if type(count) is not int or not 0 <= count <= length:
            self._spoil(f"a fill returned {count!r}, not a count from 0 to {length}")
            return ValueError(f"FillableBytes spoiled: {self._why}")
        if self._state != _OPEN:
            return ValueError(f"the FillableBytes was {self._state} while being filled")
        self._filled += count
        return None

    def _lend(self, target: bytes | bytearray, start: int, length: int) -> tuple[Any, memoryview]:
        """A writable view of ``length`` bytes at ``start``, and a way to see if it lives on."""
        if self._array is None:
            return None, memoryview(target)[start : start + length]
        # A fresh exporter per fill, so that its death proves every view of it is gone.
        exporter = self._array.from_address(self._address)
        # Every view of the storage keeps the bytes alive, without a reference
        # the source could follow from its view to the unfinished bytes object.
        weakref.finalize(exporter, _let_go, target)
        with memoryview(exporter) as raw, raw.cast("B") as whole:
            return weakref.ref(exporter), whole[start : start + length]

    @staticmethod
    def _revoke(reference: Any, view: memoryview) -> bool:
        """Release the lent view; whether anything derived from it is still alive."""
        try:
            view.release()
        except BufferError:  # something holds a buffer exported from the view itself
            return True
        return reference is not None and reference() is not None

    def _spoil(self, why: str) -> None:
        if self._state in (_OPEN, _CLOSED):
            self._state, self._why = _SPOILED, why
            self._object = b""  # views kept alive hold it; nothing else will

    # ------------------------------------------------------------- reading
    def read_at(self, position: int, size: int) -> bytes:
        """A copy of up to ``size`` written bytes from ``position`` (fewer past what is written).

        Only finished bytes are copied out; the buffer itself is never lent
        for reading, so nothing can keep a view of the unfinished ``bytes``.

        Raises:
            ValueError: the buffer is closed, or a negative ``position`` or ``size``.
            BufferError: the buffer is spoiled.
        """
        require_int("position", position)
        require_int("size", size)
        with self._lock:
            self._refuse_reading()
            end = min(self._filled, position + size)
            if position >= end:
                return b""
            return bytes(memoryview(self._object)[position:end])

    def readinto_at(self, position: int, view: Any) -> int:
        """Copy written bytes from ``position`` into the writable ``view``; return the count.

        Copies ``min(len(view), filled - position)`` bytes (0 at or past what
        is written), under the buffer's lock: a :meth:`close` from another
        thread waits for the copy or makes it raise, never tears it.

        Raises:
            ValueError: the buffer is closed, or a negative ``position``.
            BufferError: the buffer is spoiled.
        """
        require_int("position", position)
        target = memoryview(view).cast("B")
        with self._lock:
            self._refuse_reading()
            count = max(0, min(len(target), self._filled - position))
            if count:
                target[:count] = memoryview(self._object)[position : position + count]
            return count

    def _refuse_reading(self) -> None:
        """Raise if written bytes cannot be read now (call with the lock held)."""
        if self._state == _SPOILED:
            raise BufferError(f"FillableBytes spoiled: {self._why}")
        if self._state == _CLOSED:
            raise ValueError("cannot read a FillableBytes that is closed")

    def freeze(self) -> bytes:
        """Return the finished ``bytes``: exactly what was written. Idempotent.

        If the buffer was filled to its size this is the object itself, with no
        copy; otherwise a copy of the part written (unwritten memory is never
        handed out).

        Raises:
            BufferError: a fill is in progress, or the buffer is spoiled.
            ValueError: the buffer is closed.
        """
        with self._lock:
            if self._state == _FROZEN:
                assert isinstance(self._object, bytes)
                return self._object
            self._refuse("freeze")
            if self._filled == self._size and isinstance(self._object, bytes):
                frozen = self._object
            else:
                frozen = bytes(memoryview(self._object)[: self._filled])
            self._object, self._state = frozen, _FROZEN
            return frozen

    def close(self) -> None:
        """Drop the buffer (safe from any thread, idempotent); a frozen result stays valid.

        A fill in progress keeps writing into memory its view keeps alive, and
        raises ``ValueError`` when its source returns.
        """
        with self._lock:
            if self._state == _OPEN:
                self._state = _CLOSED
                self._object = b""

    def __repr__(self) -> str:
        return f"<FillableBytes {self._filled}/{self._size} bytes, {self._state}>"
