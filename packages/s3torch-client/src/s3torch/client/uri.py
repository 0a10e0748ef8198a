"""``s3://bucket/key`` URIs."""

from __future__ import annotations

import re

__all__ = ["parse_s3_uri"]

_SCHEME = "s3://"
# S3's rules (3-63 lowercase letters, digits, dots, hyphens), widened to what
# legacy us-east-1 buckets may still use (upper case, underscores, 255 chars).
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
MAX_KEY_BYTES = 1024


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``.

    The key may be empty (``s3://bucket`` or ``s3://bucket/``), which is how a
    prefix covering the whole bucket is written. The key is returned exactly as
    written: slashes, spaces and other characters are kept, nothing is decoded.

    Raises:
        ValueError: ``uri`` is not an ``s3://`` URI, names no valid bucket, or its
            key is longer than S3 allows. The message quotes the URI.
    """
    if not isinstance(uri, str):
        raise ValueError(f"S3 URI must be a string like 's3://bucket/key', got {uri!r}")
    if not uri.startswith(_SCHEME):
        raise ValueError(f"Invalid S3 URI {uri!r}: it must start with 's3://'")
    bucket, _, key = uri[len(_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"Invalid S3 URI {uri!r}: no bucket name after 's3://'")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"Invalid S3 URI {uri!r}: {bucket!r} is not a valid bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter "
            "or digit; legacy names may also hold upper case and underscores, up to 255)"
        )
    _require_utf8(key, f"Invalid S3 URI {uri!r}: the key {key!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"Invalid S3 URI {uri!r}: the key is longer than {MAX_KEY_BYTES} bytes")
    return bucket, key


def validate_bucket(bucket: str) -> None:
    """Raise ValueError unless ``bucket`` is a usable bucket name."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"Invalid bucket name {bucket!r}")


def validate_key(bucket: str, key: str) -> None:
    """Raise ValueError unless ``bucket`` is a usable bucket name and ``key`` can name an object."""
    validate_bucket(bucket)
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"Invalid key {key!r} for bucket {bucket!r}: an object key cannot be empty"
        )
    _require_utf8(key, f"Invalid key {key!r} for bucket {bucket!r}:")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(
            f"Invalid key for s3://{bucket}: {key[:60]!r}... is longer than {MAX_KEY_BYTES} bytes"
        )


def validate_text(name: str, value: str, bucket: str) -> None:
    """Raise ValueError unless ``value`` (a listing's prefix or delimiter) can be sent to S3."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r} (bucket {bucket!r})")
    _require_utf8(value, f"Invalid {name} {value!r} for bucket {bucket!r}:")


def _require_utf8(text: str, what: str) -> None:
    """S3 names objects by UTF-8 bytes: refuse a str that has none (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} is not valid UTF-8 (a lone surrogate, {text[error.start]!r}, at position "
            f"{error.start}); S3 keys are UTF-8 text. A name decoded from bytes with "
            "errors='surrogateescape' (os.fsdecode) must be decoded as UTF-8 instead"
        ) from None
