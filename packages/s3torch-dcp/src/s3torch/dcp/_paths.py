"""Checkpoint locations: ``s3://bucket/prefix`` strings, checked once, joined without surprises."""

from __future__ import annotations

import os
import pathlib

from s3torch.client import parse_s3_uri

__all__ = ["is_s3_uri", "join", "split", "to_uri"]


def to_uri(path: str | os.PathLike[str]) -> str:
    """``path`` as a checked ``s3://bucket/prefix`` string, without a trailing slash.

    Raises:
        ValueError: ``path`` is not an ``s3://`` URI (a local path, a
            ``pathlib.Path``, a malformed URI); the message quotes it.
    """
    if isinstance(path, pathlib.PurePath):
        raise ValueError(
            f"Invalid checkpoint path {str(path)!r}: a pathlib.Path is a local path; "
            "pass the S3 location as a string like 's3://bucket/checkpoints/step-100'"
        )
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, str):
        raise ValueError(
            f"Invalid checkpoint path {text!r}: expected a string like 's3://bucket/key'"
        )
    bucket, key = parse_s3_uri(text)  # raises ValueError naming the URI
    return f"s3://{bucket}/{key.rstrip('/')}" if key.rstrip("/") else f"s3://{bucket}"


def is_s3_uri(path: object) -> bool:
    """Whether ``path`` is a valid ``s3://`` URI string (never true for a ``pathlib.Path``)."""
    if isinstance(path, pathlib.PurePath) or not isinstance(path, (str, os.PathLike)):
        return False
    try:
        to_uri(path)
    except (ValueError, TypeError):
        return False
    return True


def join(path: str | os.PathLike[str], suffix: str) -> str:
    """``path/suffix`` for a checkpoint location ``path`` and a relative key ``suffix``."""
    base = to_uri(path)
    return f"{base}/{suffix.lstrip('/')}"


def split(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(bucket, key)`` of an object URI; the key must not be empty.

    Raises:
        ValueError: not an ``s3://`` URI, or one naming no object.
    """
    uri = to_uri(path)
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise ValueError(f"Invalid S3 object URI {os.fspath(path)!r}: it names no key")
    return bucket, key
