"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

The chunks a download receives are allocated by the client's network threads,
in their malloc arenas. Freeing them leaves that memory in the arenas, resident,
unless something trims them: :func:`trim_heap` does, where the C library has
``malloc_trim`` (glibc); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

__all__ = ["trim_heap"]

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        log.debug("no malloc_trim in this C library: freed chunks stay with the allocator")
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _find_malloc_trim()


def trim_heap() -> None:
    """Return the free memory of every malloc arena to the OS (no-op without glibc)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
