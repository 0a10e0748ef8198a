"""Writing a manifest: list a prefix once, stream its records into one S3 object."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from s3torch.client import S3Client, parse_s3_uri

from ._manifest import GZIP_WBITS, end_line, header_line, object_line
from ._source import is_folder_marker

__all__ = ["ManifestSummary", "write_manifest"]

log = logging.getLogger(__name__)

_LEVEL = 6  # gzip's default: the keys compress well, the ETags (random) not at all


@dataclass(frozen=True)
class ManifestSummary:
    """A manifest just written.

    Attributes:
        uri: The manifest's URI.
        prefix: The ``s3://bucket/prefix`` it lists.
        count: How many objects it names.
        compressed_bytes: Its size in S3.
        written: When its writing started (UTC): it holds the objects listed from then on.
    """

    uri: str
    prefix: str
    count: int
    compressed_bytes: int
    written: datetime


def write_manifest(
    prefix_uri: str,
    manifest_uri: str,
    *,
    client: S3Client,
    progress: Callable[[int], None] | None = None,
) -> ManifestSummary:
    """List ``prefix_uri`` and write its objects' keys, sizes and ETags to ``manifest_uri``.

    One ListObjectsV2 walk of the prefix (recursively, in key order, folder
    markers skipped, as the datasets' ``from_prefix`` lists it), written as
    it goes through the client's streaming writer: if the listing fails or
    the call is interrupted (``KeyboardInterrupt`` included), the upload is
    aborted and no manifest is left, nor an older one at ``manifest_uri``
    replaced. ``progress(count)``, if given, is called after each listing
    page with the number of objects written so far.

    The manifest's objects are in ``prefix_uri``'s bucket; the manifest itself
    may be in any bucket (a manifest inside the prefix it lists does not name
    itself: it does not exist while the prefix is listed). The format is
    described in docs/datasets.md, "Manifests".

    Returns:
        What was written: the URIs, the object count, the compressed size.

    Raises:
        ValueError: a malformed URI, or a manifest URI that names no object.
        S3Exception: the listing or the upload failed (nothing was written).
    """
    bucket, prefix = parse_s3_uri(prefix_uri)
    out_bucket, out_key = parse_s3_uri(manifest_uri)
    if not out_key:
        raise ValueError(f"Invalid manifest URI {manifest_uri!r}: it names a bucket, not an object")
    prefix_uri = f"s3://{bucket}/{prefix}"
    written = datetime.now(timezone.utc)
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    count = 0
    log.info("writing the manifest of %s to %s", prefix_uri, manifest_uri)
    with client.put_object(out_bucket, out_key) as writer:
        writer.write(packer.compress(header_line(prefix_uri, written)))
        with client.list_objects_parallel(bucket, prefix) as listing:
            for page in listing:
                records = [object_line(info) for info in page.objects if not is_folder_marker(info)]
                writer.write(packer.compress(b"".join(records)))
                count += len(records)
                if progress is not None:
                    progress(count)
        writer.write(packer.compress(end_line(count)) + packer.flush())
        size = writer.tell()
    log.info("wrote %s: %d objects, %d bytes", manifest_uri, count, size)
    return ManifestSummary(f"s3://{out_bucket}/{out_key}", prefix_uri, count, size, written)
