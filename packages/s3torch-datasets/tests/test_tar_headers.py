"""The fast header reader (``plain_header``) against the standard library's ``TarInfo.frombuf``.

Whatever the header (written by ``tarfile`` in each format, with any name
and size, or damaged at any byte), ``plain_header`` either declines it or
reads what ``frombuf`` reads; it never accepts one ``frombuf`` refuses.
"""

from __future__ import annotations

import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from s3torch.datasets._tar_stream import plain_header

FORMATS = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=300
)
_PATHS = st.lists(st.text("abc.é/", min_size=1, max_size=60), min_size=1, max_size=6).map("/".join)
NAMES = st.one_of(_TEXT, _PATHS)  # paths: ustar's prefix field, GNU long names, PAX paths
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.AREGTYPE])


def headers(name: str, size: int, kind: bytes, fmt: int) -> list[bytes]:
    """Every 512-byte header block ``tarfile`` writes for one member (extended records too)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.linkname = "target" if kind == tarfile.SYMTYPE else ""
    try:
        data = info.tobuf(fmt, "utf-8", "surrogateescape")
    except ValueError:  # a name this format cannot hold
        return []
    # tobuf gives the headers only: extended records (a PAX header and its
    # data, GNU long names) and the member's own header, in 512-byte blocks.
    return [data[offset : offset + 512] for offset in range(0, len(data), 512)]


def frombuf(block: bytes) -> tuple[str, int, bytes] | None:
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None
    return info.name, info.size, info.type


def agrees(block: bytes) -> None:
    fast = plain_header(block)
    if fast is not None:
        assert fast == frombuf(block), block


@settings(max_examples=300, deadline=None)
@given(NAMES, st.integers(0, 8**11 - 1), KINDS, FORMATS)
def test_plain_header_reads_what_frombuf_reads(name: str, size: int, kind: bytes, fmt: int) -> None:
    for block in headers(name, size, kind, fmt):
        if block.count(0) == 512:
            continue
        agrees(block)


@settings(max_examples=500, deadline=None)
@given(NAMES, st.integers(0, 8**11 - 1), FORMATS, st.integers(0, 511), st.integers(0, 255))
def test_a_damaged_header_is_declined_or_read_as_frombuf_reads_it(
    name: str, size: int, fmt: int, at: int, value: int
) -> None:
    for block in headers(name, size, tarfile.REGTYPE, fmt)[:1]:
        damaged = block[:at] + bytes([value]) + block[at + 1 :]
        agrees(damaged)


def test_plain_header_takes_the_common_headers() -> None:
    info = tarfile.TarInfo("train/000123.jpg")
    info.size = 102400
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        block = info.tobuf(fmt, "utf-8", "surrogateescape")
        assert plain_header(block) == ("train/000123.jpg", 102400, tarfile.REGTYPE)
    long = tarfile.TarInfo("d" * 150 + "/000123.jpg")  # a PAX record, then the member
    records = long.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert plain_header(records[:512]) is not None
    assert plain_header(records[:512])[2] == tarfile.XHDTYPE  # type: ignore[index]
    assert plain_header(bytes(512)) is None
