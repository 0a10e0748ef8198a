"""The ``s3://bucket/key`` of one checkpoint object."""

from __future__ import annotations

from s3torch.client import parse_s3_uri

__all__ = ["parse_object_uri"]


def parse_object_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key must name an object.

    Raises:
        ValueError: ``uri`` is not an ``s3://`` URI, names no valid bucket, or
            has no key (``s3://bucket``, ``s3://bucket/``). The message quotes it.
    """
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise ValueError(
            f"Invalid checkpoint URI {uri!r}: it names a bucket but no object key "
            "(expected 's3://bucket/key')"
        )
    return bucket, key
