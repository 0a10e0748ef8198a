"""Dataset manifests: a prefix's keys, sizes and ETags in one S3 object, read with no LIST.

The format (version 1) is gzip-compressed JSON lines, UTF-8, one JSON object
a line:

* line 1, the header: ``{"format": "s3torch-manifest", "version": 1,
  "prefix": "s3://bucket/prefix", "written": "<ISO 8601 UTC>"}``;
* one line per object, in key order, each key once:
  ``{"key": "prefix/a.jpg", "size": 1234, "etag": "\\"9b2c...\\""}`` (the
  ETag as S3 returns it, quotes included);
* the last line, the end record: ``{"end": true, "count": <objects>}``.

Every object is in the bucket of the header's prefix (which may differ from
the manifest's own bucket). The count is in the end record, not the header:
a manifest is written while the prefix is listed, in one streamed upload, so
the count is known only at the end; and an end record that must be there
tells a manifest cut short from a complete one however it was cut.

A manifest is written through the client's streaming writer: a listing that
fails, or an interrupted write, aborts the upload and leaves no object (nor
a half manifest over an older one). Reading streams: one GET, decompressed
and parsed a chunk at a time, in bounded memory, whatever the manifest's
length.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from s3torch.client import ObjectInfo, S3Client, S3PreconditionFailedError, parse_s3_uri

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "ManifestError",
    "ManifestHeader",
    "ManifestMismatchError",
    "end_line",
    "header_line",
    "object_line",
    "read_manifest",
    "read_manifest_header",
]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "s3torch-manifest"
"""The ``format`` field of a manifest's header."""

MANIFEST_VERSION = 1
"""The version of the manifest format that this release writes and reads."""

_CHUNK = 1 << 18  # compressed bytes read, and text decompressed, at a time
GZIP_WBITS = zlib.MAX_WBITS | 16
"""zlib's ``wbits`` for a gzip stream."""
_MAX_LINE = 1 << 16  # a record is at most a few KiB (S3 keys: 1,024 bytes)


class ManifestError(ValueError):
    """A manifest that is not one: not gzip, truncated, no header, another version, a bad line.

    The message names the manifest's URI and the line (1 is the header).

    Attributes:
        uri: The manifest's ``s3://`` URI (None if rebuilt from a message).
        line: The line at fault, from 1 (None if not about one line).
    """

    def __init__(self, message: str, *, uri: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.uri = uri
        self.line = line

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_manifest_error, (str(self), self.uri, self.line))


def _rebuild_manifest_error(message: str, uri: str | None, line: int | None) -> ManifestError:
    return ManifestError(message, uri=uri, line=line)


class ManifestMismatchError(S3PreconditionFailedError):
    """An object changed since the manifest that names it was written (ETag or size).

    Raised when the object is read: a GET carries the manifest's ETag as
    ``If-Match``, and S3 refuses (412) once the object was overwritten; a
    reader that finds another size raises alike. No byte of the other
    version reaches the transform. The message names the object (``bucket``
    and ``key`` attributes, as every :class:`~s3torch.client.S3Exception`)
    and the manifest; the 412 is chained as the cause.

    Attributes:
        manifest: The manifest's URI (None if rebuilt from a message).
    """

    def __init__(self, reason: str, *, manifest: str | None = None, **fields: Any) -> None:
        super().__init__(reason, **fields)
        self.manifest = manifest


@dataclass(frozen=True)
class ManifestHeader:
    """What a manifest's first line says.

    Attributes:
        uri: The manifest's own URI.
        prefix: The ``s3://bucket/prefix`` it lists; its objects are in that bucket.
        written: When it was written (UTC).
        version: Its format version.
    """

    uri: str
    prefix: str
    written: datetime
    version: int = MANIFEST_VERSION

    @property
    def bucket(self) -> str:
        """The bucket of the manifest's objects."""
        return parse_s3_uri(self.prefix)[0]


def header_line(prefix_uri: str, written: datetime) -> bytes:
    """The header record of a manifest of ``prefix_uri`` written at ``written`` (UTC)."""
    return _line(
        {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "prefix": prefix_uri,
            "written": written.isoformat().replace("+00:00", "Z"),
        }
    )


def object_line(info: ObjectInfo) -> bytes:
    """The record of one object: its key, size and ETag."""
    return _line({"key": info.key, "size": info.size, "etag": info.etag})


def end_line(count: int) -> bytes:
    """The end record of a manifest of ``count`` objects."""
    return _line({"end": True, "count": count})


def _line(record: dict[str, Any]) -> bytes:
    # ensure_ascii: any key (newlines, tabs, quotes, lone surrogates) is one safe line.
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


# ------------------------------------------------------------------ reading
def read_manifest_header(uri: str, client: S3Client) -> tuple[ManifestHeader, str | None]:
    """The header of the manifest at ``uri``, and the manifest's ETag (its version).

    Reads only as far as the first line (the stream is then cancelled).

    Raises:
        ManifestError: not a manifest (naming ``uri`` and line 1).
        S3Exception: the GET failed (``S3NotFoundError`` for a missing manifest).
    """
    bucket, key = _manifest_location(uri)
    stream = client.get_object_stream(bucket, key)
    try:
        lines = _lines(uri, stream)
        header = _parse_header(uri, next(lines, None))
        return header, stream.object_info.etag
    finally:
        stream.close()


def read_manifest(
    uri: str, client: S3Client, *, etag: str | None = None
) -> tuple[ManifestHeader, Generator[ObjectInfo, None, None]]:
    """Stream the manifest at ``uri``: its header, then its objects, in order.

    The objects are parsed as they are iterated, a chunk of the manifest at
    a time. ``etag``: only read this version of the manifest (a manifest
    replaced meanwhile raises ``S3PreconditionFailedError`` naming it).

    Raises:
        ManifestError: (when iterated, past the header) a line that is not
            an object record, keys out of order or repeated, a truncated
            file, a missing end record or a wrong count, naming ``uri`` and
            the line.
        S3Exception: the GET failed.
    """
    bucket, key = _manifest_location(uri)
    stream = client.get_object_stream(bucket, key, etag=etag)
    lines = _lines(uri, stream)
    try:
        header = _parse_header(uri, next(lines, None))
    except BaseException:
        stream.close()
        raise
    return header, _objects(uri, header.bucket, stream, lines)


def _manifest_location(uri: str) -> tuple[str, str]:
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise ValueError(f"Invalid manifest URI {uri!r}: it names a bucket, not an object")
    return bucket, key


def _objects(
    uri: str, bucket: str, stream: Any, lines: Iterator[tuple[int, bytes]]
) -> Generator[ObjectInfo, None, None]:
    count = 0
    previous: str | None = None
    try:
        for number, line in lines:
            record = _json(uri, number, line)
            if "key" not in record:
                if record.get("end") is not True:
                    raise ManifestError(
                        f"{uri} line {number}: not an object record nor the end record: "
                        f"{_quote(line)}",
                        uri=uri,
                        line=number,
                    )
                if record.get("count") != count:
                    raise ManifestError(
                        f"{uri} line {number}: the end record counts {record.get('count')!r} "
                        f"objects, but the manifest holds {count}",
                        uri=uri,
                        line=number,
                    )
                extra = next(lines, None)
                if extra is not None:
                    raise ManifestError(
                        f"{uri} line {extra[0]}: data after the end record", uri=uri, line=extra[0]
                    )
                return
            info = _object(uri, bucket, number, record)
            if previous is not None and not info.key > previous:
                raise ManifestError(
                    f"{uri} line {number}: key {info.key!r} is not after {previous!r} "
                    "(a manifest lists each key once, in key order)",
                    uri=uri,
                    line=number,
                )
            previous = info.key
            count += 1
            yield info
        raise ManifestError(
            f"{uri} line {count + 2}: no end record (the manifest stops after line "
            f"{count + 1}: truncated?)",
            uri=uri,
            line=count + 2,
        )
    finally:
        stream.close()


def _object(uri: str, bucket: str, number: int, record: dict[str, Any]) -> ObjectInfo:
    key, size, etag = record.get("key"), record.get("size"), record.get("etag")
    if (
        not isinstance(key, str)
        or not key
        or isinstance(size, bool)
        or not isinstance(size, int)
        or size < 0
        or not (etag is None or isinstance(etag, str))
        or set(record) - {"key", "size", "etag"}
    ):
        raise ManifestError(
            f"{uri} line {number}: an object record needs a non-empty string 'key', an int "
            f"'size' >= 0 and a string (or null) 'etag', and nothing else; got {record!r}",
            uri=uri,
            line=number,
        )
    try:
        key.encode()
    except UnicodeEncodeError as bad:  # a lone surrogate: S3 could not hold it
        raise ManifestError(
            f"{uri} line {number}: key {key!r} is not valid UTF-8", uri=uri, line=number
        ) from bad
    return ObjectInfo(bucket, key, size, etag)


def _parse_header(uri: str, first: tuple[int, bytes] | None) -> ManifestHeader:
    if first is None:
        raise ManifestError(f"{uri} is empty: no header line", uri=uri, line=1)
    header = _json(uri, 1, first[1])
    if header.get("format") != MANIFEST_FORMAT:
        raise ManifestError(
            f'{uri} line 1: not an s3torch manifest header (no "format": '
            f'"{MANIFEST_FORMAT}"): {_quote(first[1])}',
            uri=uri,
            line=1,
        )
    version = header.get("version")
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"{uri} line 1: manifest format version {version!r}; this s3torch reads "
            f"version {MANIFEST_VERSION} (write the manifest again with it)",
            uri=uri,
            line=1,
        )
    prefix, written = header.get("prefix"), header.get("written")
    try:
        if not isinstance(prefix, str) or not isinstance(written, str):
            raise ValueError("'prefix' and 'written' must be strings")
        parse_s3_uri(prefix)
        when = datetime.fromisoformat(written.replace("Z", "+00:00"))
    except ValueError as bad:
        raise ManifestError(
            f"{uri} line 1: a bad header ({bad}): {_quote(first[1])}", uri=uri, line=1
        ) from bad
    return ManifestHeader(uri, prefix, when, version)


def _json(uri: str, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as bad:  # not JSON, or not UTF-8
        raise ManifestError(
            f"{uri} line {number}: not a JSON record ({bad}): {_quote(line)}",
            uri=uri,
            line=number,
        ) from bad
    if not isinstance(record, dict):
        raise ManifestError(
            f"{uri} line {number}: not a JSON object: {_quote(line)}", uri=uri, line=number
        )
    return record


def _quote(line: bytes) -> str:
    return repr(line[:120]) + ("..." if len(line) > 120 else "")


def _lines(uri: str, stream: Any) -> Iterator[tuple[int, bytes]]:
    """The manifest's lines, numbered from 1, decompressed a bounded chunk at a time."""
    unpacker = zlib.decompressobj(GZIP_WBITS)
    pending = b""
    number = 0
    received = 0
    while not unpacker.eof:
        chunk = stream.read(_CHUNK)
        if not chunk:
            what = (
                "is empty (0 bytes)"
                if not received
                else (f"is truncated: its gzip stream ends after line {number}, unfinished")
            )
            raise ManifestError(f"{uri} {what}", uri=uri, line=number + 1)
        received += len(chunk)
        while True:  # a bounded piece of text at a time, whatever the ratio
            try:
                text = unpacker.decompress(chunk, _CHUNK)
            except zlib.error as bad:
                what = "is not gzip-compressed" if not number and not pending else "is corrupt"
                raise ManifestError(
                    f"{uri} {what} (line {number + 1}): {bad}", uri=uri, line=number + 1
                ) from bad
            chunk = unpacker.unconsumed_tail
            *complete, pending = (pending + text).split(b"\n")
            for line in complete:
                number += 1
                yield number, line
            if len(pending) > _MAX_LINE:
                raise ManifestError(
                    f"{uri} line {number + 1}: longer than {_MAX_LINE} bytes, not a manifest line",
                    uri=uri,
                    line=number + 1,
                )
            if unpacker.eof or (not chunk and len(text) < _CHUNK):
                break
    if unpacker.unused_data or stream.read(1):
        raise ManifestError(
            f"{uri}: data after the end of its gzip stream (after line {number})",
            uri=uri,
            line=number + 1,
        )
    if pending:
        yield number + 1, pending  # a last line without its newline
