"""Copy received bytes into the buffer ``torch.load`` hands the reader, on several cores.

``torch.load`` reads each tensor's bytes with one ``readinto`` into the
tensor's freshly allocated storage. Copying into fresh memory is bound by the
page faults that first touch it, and one thread does them one page at a time.
:func:`copy_into` splits a large copy into slices copied by worker threads:
NumPy releases the GIL while it copies, so the faults are taken on several
cores at once. Small copies stay on the calling thread.

Threads are started for the copy and have all stopped before it returns or
raises, even when Ctrl-C interrupts it at any moment: they run in a
:class:`~s3torch.client.threads.ThreadGroup`, whose barrier holds through
``KeyboardInterrupt``, and they look for a stop request between slices of at
most :data:`SLICE_BYTES`, so an interrupted copy ends within a few
milliseconds. So nothing writes into the target after the call (torch may
free it as soon as the error reaches it), no pool outlives a call (nothing is
left behind by ``fork`` or at interpreter exit), and each slice is
bounds-checked by NumPy: a wrong offset raises, it never writes out of bounds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from s3torch.client.threads import ThreadGroup

__all__ = ["copy_into", "copy_threads"]

PARALLEL_MIN_BYTES = 8 * 1024 * 1024
"""Copies smaller than this stay on the calling thread."""
SLICE_BYTES = 4 * 1024 * 1024
"""Each worker copies at least this many bytes, and at most this many between stop checks."""
MAX_THREADS = 8


def copy_threads() -> int:
    """How many threads a large copy uses: the cores this process may run on, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def copy_into(
    target: memoryview, sources: Sequence[tuple[int, memoryview]], threads: int | None = None
) -> None:
    """Copy each ``(offset, source)`` to ``target[offset : offset + len(source)]``.

    The sources must lie inside ``target`` (NumPy raises otherwise). Large
    copies are shared among ``threads`` threads (default :func:`copy_threads`),
    each copying at least 4 MiB; an exception in any of them is raised here
    once all have finished.
    """
    total = sum(len(source) for _, source in sources)
    threads = min(copy_threads() if threads is None else threads, total // SLICE_BYTES)
    destination = np.frombuffer(target, dtype=np.uint8)
    if total < PARALLEL_MIN_BYTES or threads < 2:
        _copy_slices(destination, list(sources))
        return
    shares = _split(sources, threads)
    with ThreadGroup("s3torch-copy") as group:
        for share in shares[1:]:
            group.start(_copy_share, destination, share, group)
        _copy_share(destination, shares[0], group)
    if group.error is not None:
        raise group.error


def _copy_slices(destination: np.ndarray, sources: list[tuple[int, memoryview]]) -> None:
    for offset, source in sources:
        data = np.frombuffer(source, dtype=np.uint8)
        np.copyto(destination[offset : offset + len(data)], data)


def _copy_share(
    destination: np.ndarray, share: list[tuple[int, memoryview]], group: ThreadGroup
) -> None:
    """Copy one thread's share, :data:`SLICE_BYTES` at a time, until done or stopped."""
    for offset, source in share:
        for start in range(0, len(source), SLICE_BYTES):
            if group.stopping:
                return
            piece = source[start : start + SLICE_BYTES]
            at = offset + start
            np.copyto(destination[at : at + len(piece)], np.frombuffer(piece, dtype=np.uint8))


def _split(
    sources: Sequence[tuple[int, memoryview]], count: int
) -> list[list[tuple[int, memoryview]]]:
    """``count`` lists of slices of ``sources``, of nearly equal bytes, in order."""
    total = sum(len(source) for _, source in sources)
    share = -(-total // count)
    shares: list[list[tuple[int, memoryview]]] = [[]]
    room = share
    for offset, source in sources:
        while len(source):
            if room == 0:
                shares.append([])
                room = share
            take = min(room, len(source))
            shares[-1].append((offset, source[:take]))
            offset += take
            source = source[take:]
            room -= take
    return shares
