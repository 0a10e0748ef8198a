"""Shard patterns: ``s3://bucket/shard-%06d.tar``, one printf-style integer field in the key."""

from __future__ import annotations

import re

from s3torch.client import parse_s3_uri

__all__ = ["parse_shard_pattern"]

# One printf-style conversion: "%%", or flags, width, precision and a type.
_CONVERSION = re.compile(r"%(?P<spec>[-+ #0]*\d*(?:\.\d*)?)(?P<type>.?)", re.DOTALL)
_INTEGER_TYPES = frozenset("diu")


def parse_shard_pattern(pattern: str) -> tuple[str, str]:
    """Split a shard pattern ``s3://bucket/key-%06d.tar`` into ``(bucket, key pattern)``.

    The key must hold exactly one printf-style integer field (``%d``,
    ``%06d``, ``%i``, ``%u``, flags and width allowed; ``%%`` is a literal
    ``%``), which the shard index fills; the bucket holds none.

    Raises:
        ValueError: ``pattern`` is not such a pattern; the message quotes it.
    """
    if not isinstance(pattern, str):
        raise ValueError(
            f"the shard pattern must be a str like 's3://bucket/shard-%06d.tar', got {pattern!r}"
        )
    if not pattern.startswith("s3://"):
        raise ValueError(f"Invalid shard pattern {pattern!r}: it must start with 's3://'")
    bucket, _, key = pattern[len("s3://") :].partition("/")
    if "%" in bucket:
        raise ValueError(
            f"Invalid shard pattern {pattern!r}: the shard number goes in the key, not the bucket"
        )
    fields = []
    for match in _CONVERSION.finditer(key):
        if match["type"] == "%" and not match["spec"]:
            continue  # "%%", a literal "%"
        if match["type"] not in _INTEGER_TYPES:
            raise ValueError(
                f"Invalid shard pattern {pattern!r}: {match[0]!r} is not an integer field "
                "(use one field like %06d, and %% for a literal '%')"
            )
        fields.append(match[0])
    if len(fields) != 1:
        raise ValueError(
            f"Invalid shard pattern {pattern!r}: it must hold exactly one integer field like %06d "
            f"in its key, for the shard number (found {len(fields)})"
        )
    try:
        example = key % 0
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid shard pattern {pattern!r}: {error}") from error
    if not example or example.endswith("/"):
        raise ValueError(
            f"Invalid shard pattern {pattern!r}: its key names a folder, not an object"
        )
    try:
        parse_s3_uri(f"s3://{bucket}/{example}")
    except ValueError as error:
        raise ValueError(f"Invalid shard pattern {pattern!r}: {error}") from error
    return bucket, key
