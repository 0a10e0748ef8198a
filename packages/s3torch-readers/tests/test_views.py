"""slice_views and join_views: byte ranges of received chunks, without copies where possible."""

from __future__ import annotations

import pytest

from s3torch.readers import join_views, slice_views

PIECES = [memoryview(b"abc"), memoryview(b"defg"), memoryview(b"h")]


@pytest.mark.parametrize(
    ("offset", "size", "expected"),
    [
        (0, 8, [b"abc", b"defg", b"h"]),
        (2, 3, [b"c", b"de"]),
        (3, 4, [b"defg"]),
        (7, 5, [b"h"]),  # past the end: what there is
        (8, 2, []),
        (1, 0, []),
    ],
)
def test_slice_views_cuts_the_concatenation(offset: int, size: int, expected: list[bytes]) -> None:
    views = slice_views(PIECES, offset, size)
    assert [bytes(view) for view in views] == expected


def test_a_whole_piece_is_handed_back_itself_and_a_part_is_a_view_of_it() -> None:
    whole, part = slice_views(PIECES, 3, 4)[0], slice_views(PIECES, 4, 2)[0]
    assert whole is PIECES[1]
    assert part.obj is PIECES[1].obj


def test_join_views_returns_a_whole_chunk_itself_and_copies_otherwise() -> None:
    chunk = b"whole chunk"
    assert join_views([memoryview(chunk)]) is chunk
    assert join_views([memoryview(chunk)[1:]]) == b"hole chunk"
    assert join_views([memoryview(bytearray(b"xy"))]) == b"xy"
    assert join_views(PIECES) == b"abcdefgh"
    assert join_views([]) == b""
