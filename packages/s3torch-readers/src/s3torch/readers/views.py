"""Bytes held as views of the chunks they arrived in, cut and joined without copying.

A reader that keeps what the client received as it came (a list of
``memoryview``\\ s of the chunks, in order) serves a byte range of it with
:func:`slice_views` (views, no copy) and hands it out as one ``bytes`` with
:func:`join_views` (a copy only where the range is not a whole chunk already).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["join_views", "slice_views"]


def slice_views(pieces: Sequence[memoryview], offset: int, size: int) -> list[memoryview]:
    """The bytes ``[offset, offset + size)`` of the concatenated ``pieces``, as views.

    ``pieces`` are one-dimensional byte views. Fewer than ``size`` bytes come
    back only where the pieces end first.

    Examples:
        >>> [bytes(view) for view in slice_views([memoryview(b"abc"), memoryview(b"defg")], 2, 3)]
        [b'c', b'de']
    """
    views: list[memoryview] = []
    for piece in pieces:
        if size <= 0:
            break
        if offset >= len(piece):
            offset -= len(piece)
            continue
        take = min(len(piece) - offset, size)
        views.append(piece if offset == 0 and take == len(piece) else piece[offset : offset + take])
        size -= take
        offset = 0
    return views


def join_views(views: Sequence[memoryview]) -> bytes:
    """``views`` as one ``bytes``: the chunk itself when one view covers all of a ``bytes``.

    >>> chunk = b"whole"
    >>> join_views([memoryview(chunk)]) is chunk
    True
    >>> join_views([memoryview(b"ab"), memoryview(b"cd")])
    b'abcd'
    """
    if len(views) == 1:
        view = views[0]
        if isinstance(view.obj, bytes) and view.nbytes == len(view.obj):
            return view.obj
    return b"".join(views)
