"""Allocate a ``bytes`` object once and fill it in place.

Python offers no way to build a large ``bytes`` without a second copy: filling
a ``bytearray`` and calling ``bytes()`` on it holds the data twice, and
``b"".join`` holds every chunk plus the result. CPython's C API does it the
efficient way: ``PyBytes_FromStringAndSize(NULL, n)`` returns an uninitialized
object, the caller fills its storage, then hands it out. That is what this
module does, through ``ctypes``, so a download of N bytes costs N bytes of
memory and one copy, and skips the zero-filling a ``bytearray`` pays for.

The rules that make this safe: the object is fresh and referenced only by the
caller until it is fully written (nobody can have hashed or compared it), sizes
0 and 1 (shared singletons) are never written, and the writable view must not
outlive the object (callers keep both together and drop the view first).
Elsewhere than CPython a ``bytearray`` stands in, and costs a copy at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform

_CPYTHON = platform.python_implementation() == "CPython"

if _CPYTHON:
    _new = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new.restype = ctypes.py_object
    _new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _storage = ctypes.pythonapi.PyBytes_AsString
    _storage.restype = ctypes.c_void_p
    _storage.argtypes = (ctypes.py_object,)


class FillableBytes:
    """A ``bytes`` of a fixed size, written once through :attr:`view`, then frozen.

    ``view`` is a writable ``memoryview`` of the storage; :meth:`freeze`
    releases it and returns the object, which from then on is an ordinary,
    immutable ``bytes``.
    """

    __slots__ = ("_object", "view")

    def __init__(self, size: int) -> None:
        if _CPYTHON and size >= 2:
            self._object: bytes | bytearray = _new(None, size)
            address = _storage(self._object)
            array = (ctypes.c_char * size).from_address(address)
            self.view: memoryview | None = memoryview(array).cast("B")
        else:
            self._object = bytearray(size)
            self.view = memoryview(self._object)

    @property
    def data(self) -> bytes | bytearray:
        """The object being filled (only read the parts already written)."""
        return self._object

    def freeze(self) -> bytes:
        """Stop writing; return the finished ``bytes``."""
        if self.view is not None:
            with contextlib.suppress(BufferError):  # a caller may still hold a slice
                self.view.release()
            self.view = None
        if isinstance(self._object, bytearray):
            self._object = bytes(self._object)
        return self._object
