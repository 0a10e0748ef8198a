"""What a 416 (InvalidRange) answer to the first window of a download means.

S3 answers a range that starts at or past the end of an object with 416. For
the first window that is not always an error: an empty object answers every
range with 416 (a plain GET then brings its headers back and proves it
exists), and a range that starts at or past the end is an empty stream, as
reading past the end of a file is. Pure logic: no I/O, no lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from awscrt.s3 import S3ResponseError

from ._crt_errors import header

CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_ACTUAL_SIZE = re.compile(rb"<ActualObjectSize>(\d+)</ActualObjectSize>")


@dataclass(frozen=True)
class Recovery:
    """``refetch_whole``: GET the (empty) object without a range; ``empty``: the
    range lies past the end of an object of ``size`` bytes; ``fail``: a real error."""

    action: Literal["refetch_whole", "empty", "fail"]
    size: int | None = None


def after_416(error: BaseException, start: int) -> Recovery:
    """Decide what the failure of a download's first window (at ``start``) means."""
    if not (isinstance(error, S3ResponseError) and error.status_code == 416):
        return Recovery("fail")
    if start == 0:
        return Recovery("refetch_whole")
    size = size_from_416(error)
    if size is not None and start >= size:
        return Recovery("empty", size)
    return Recovery("fail")


def size_from_416(error: S3ResponseError) -> int | None:
    """The object size an InvalidRange answer reveals (Content-Range or the error body)."""
    match = CONTENT_RANGE.fullmatch(header(error.headers, "Content-Range") or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    found = _ACTUAL_SIZE.search(error.body or b"")
    return int(found.group(1)) if found else None
