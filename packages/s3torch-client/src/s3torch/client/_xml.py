"""Build and parse the XML documents of the S3 REST API."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from urllib.parse import unquote
from xml.sax.saxutils import escape

from .errors import S3Exception
from .models import ListObjectsPage, ObjectInfo, parse_iso_date


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _parse(body: bytes, operation: str, bucket: str, key: str | None = None) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as error:
        raise S3Exception(
            f"the server sent a malformed XML response: {error}",
            operation=operation,
            bucket=bucket,
            key=key,
            code="MalformedResponse",
        ) from error


def parse_list_objects(body: bytes, bucket: str) -> tuple[ListObjectsPage, str | None]:
    """Parse a ListObjectsV2 page; return it with the continuation token (None at the end)."""
    root = _parse(body, "ListObjectsV2", bucket)
    url_encoded = (_text(root, "EncodingType") or "").lower() == "url"

    def decode(value: str) -> str:
        return unquote(value) if url_encoded else value

    objects = []
    for item in _children(root, "Contents"):
        size = _text(item, "Size")
        objects.append(
            ObjectInfo(
                bucket=bucket,
                key=decode(_text(item, "Key") or ""),
                size=int(size) if size else 0,
                etag=_text(item, "ETag") or None,
                last_modified=parse_iso_date(_text(item, "LastModified")),
                storage_class=_text(item, "StorageClass") or None,
            )
        )
    prefixes = tuple(
        decode(_text(item, "Prefix") or "") for item in _children(root, "CommonPrefixes")
    )
    truncated = (_text(root, "IsTruncated") or "").lower() == "true"
    token = _text(root, "NextContinuationToken") if truncated else None
    return ListObjectsPage(tuple(objects), prefixes), token or None


def parse_upload_id(body: bytes, bucket: str, key: str) -> str:
    root = _parse(body, "CreateMultipartUpload", bucket, key)
    upload_id = _text(root, "UploadId")
    if not upload_id:
        raise S3Exception(
            "the server returned no UploadId",
            operation="CreateMultipartUpload",
            bucket=bucket,
            key=key,
            code="MalformedResponse",
        )
    return upload_id


NO_OBJECT_PARTS = "NoObjectParts"
"""The code of a GetObjectAttributes answer that lists no parts (moto keeps none)."""


def parse_key_uploads(
    body: bytes, bucket: str, key: str
) -> tuple[list[str], tuple[str, str] | None]:
    """Parse a ListMultipartUploads page: the upload ids of exactly ``key``, and the
    ``(key-marker, upload-id-marker)`` of the next page (None on the last, or once
    the listing has moved past ``key``: keys come in order)."""
    root = _parse(body, "ListMultipartUploads", bucket, key)
    url_encoded = (_text(root, "EncodingType") or "").lower() == "url"
    ids = []
    past = False
    for upload in _children(root, "Upload"):
        name = _text(upload, "Key") or ""
        name = unquote(name) if url_encoded else name
        if name == key:
            ids.append(_text(upload, "UploadId") or "")
        elif name.encode() > key.encode():
            past = True
    truncated = (_text(root, "IsTruncated") or "").lower() == "true"
    if not truncated or past:
        return [i for i in ids if i], None
    marker = _text(root, "NextKeyMarker") or ""
    marker = unquote(marker) if url_encoded else marker
    return [i for i in ids if i], (marker, _text(root, "NextUploadIdMarker") or "")


def complete_multipart_upload(
    parts: Iterable[tuple[int, str, str | None]], checksum_tag: str
) -> bytes:
    """The CompleteMultipartUpload body for ``(part number, ETag, checksum)`` triples."""
    lines = ["<CompleteMultipartUpload>"]
    for number, etag, checksum in parts:
        extra = f"<{checksum_tag}>{checksum}</{checksum_tag}>" if checksum else ""
        lines.append(
            f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag>{extra}</Part>"
        )
    lines.append("</CompleteMultipartUpload>")
    return "".join(lines).encode()


# An XML parser turns a raw CR (or CR LF) into LF and may fold tabs: characters
# that must reach the server unchanged go as character references.
_KEY_ENTITIES = {"\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}


def delete_objects(keys: Iterable[str]) -> bytes:
    """A quiet DeleteObjects body: the response then lists failures only."""
    objects = "".join(f"<Object><Key>{escape(key, _KEY_ENTITIES)}</Key></Object>" for key in keys)
    return f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()


def parse_delete_errors(body: bytes, bucket: str) -> list[tuple[str, str, str]]:
    """``(key, code, message)`` of every key a DeleteObjects response reports as failed."""
    if not body.strip():
        return []
    root = _parse(body, "DeleteObjects", bucket)
    return [
        (_text(error, "Key") or "", _text(error, "Code") or "", _text(error, "Message") or "")
        for error in _children(root, "Error")
    ]


def parse_object_parts(
    body: bytes, bucket: str, key: str
) -> tuple[list[int], int | None, str | None]:
    """Parse a GetObjectAttributes answer: part sizes in order, the next marker if
    truncated, and the object's ETag if the answer gives it."""
    root = _parse(body, "GetObjectAttributes", bucket, key)
    etag = _text(root, "ETag") or None
    parts = next(iter(_children(root, "ObjectParts")), None)
    if parts is None:  # a well-formed answer without them: the server does not keep them
        raise S3Exception(
            "GetObjectAttributes returned no ObjectParts",
            operation="GetObjectAttributes",
            bucket=bucket,
            key=key,
            code=NO_OBJECT_PARTS,
        )
    numbered = sorted(
        (int(_text(part, "PartNumber") or 0), int(_text(part, "Size") or -1))
        for part in _children(parts, "Part")
    )
    if not numbered or any(size < 0 for _, size in numbered):
        raise S3Exception(
            "GetObjectAttributes returned parts without sizes",
            operation="GetObjectAttributes",
            bucket=bucket,
            key=key,
            code="MalformedResponse",
        )
    truncated = (_text(parts, "IsTruncated") or "").lower() == "true"
    following = _text(parts, "NextPartNumberMarker")
    return [size for _, size in numbered], int(following) if truncated and following else None, etag
