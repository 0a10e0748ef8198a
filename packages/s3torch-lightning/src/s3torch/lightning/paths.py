"""What a checkpoint path given to the plugin names: an S3 object, or a local file.

Lightning hands a ``CheckpointIO`` the paths its callbacks build
(``s3://bucket/key`` under an ``s3://`` directory), the ``ckpt_path`` a user
gives, and, with the spawn and fork launchers (``ddp_spawn``, ``ddp_fork``),
a temporary local file in which rank 0 passes the trained weights back to the
main process. The plugin serves the first two on S3 and the last like
Lightning's own ``TorchCheckpointIO``; anything else is a mistake, refused by
name.
"""

from __future__ import annotations

import os
import re

from s3torch.client import parse_s3_uri

__all__ = ["checkpoint_uri", "prefix_uri"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _s3_uri(path: object, what: str) -> str | None:
    """``path`` as an S3 URI, or None for a local path; TypeError/ValueError for the rest."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
        if isinstance(path, str) and not path.startswith("s3:/"):
            return None  # a pathlib.Path: local
    if not isinstance(path, str):
        raise TypeError(
            f"S3LightningCheckpoint: the checkpoint {what} must be an 's3://bucket/key' "
            f"string (or a local path), got {type(path).__name__} {path!r}"
        )
    if path.startswith("s3:/") and not path.startswith("s3://"):
        raise ValueError(
            f"S3LightningCheckpoint: {path!r} is not an S3 URI; it looks like 's3://...' "
            "after os.path.normpath (as Lightning's ckpt_path='last' does): pass the "
            "s3:// URI, e.g. from S3LightningCheckpoint.find_last_checkpoint()"
        )
    if path.startswith("s3://"):
        parse_s3_uri(path)  # ValueError naming the URI
        return path
    if _SCHEME.match(path):
        raise ValueError(
            f"S3LightningCheckpoint: {path!r} is neither an s3:// URI nor a local path"
        )
    return None


def checkpoint_uri(path: object) -> str | None:
    """The ``s3://bucket/key`` URI ``path`` names, or None if it is a local path.

    Raises:
        TypeError: ``path`` is neither a string nor an ``os.PathLike``.
        ValueError: another URL scheme (``gs://``), a malformed S3 URI, an
            ``s3:/`` URI mangled by ``os.path.normpath``, or a bucket without a key.
    """
    uri = _s3_uri(path, "path")
    if uri is not None and not parse_s3_uri(uri)[1]:
        raise ValueError(f"S3LightningCheckpoint: {uri!r} names a bucket, not an object")
    return uri


def prefix_uri(prefix: object) -> str:
    """``prefix`` as an ``s3://bucket[/prefix]`` URI.

    Raises:
        TypeError, ValueError: ``prefix`` is not an ``s3://`` URI string.
    """
    if not isinstance(prefix, str):
        raise TypeError(
            "S3LightningCheckpoint: the checkpoint prefix must be an 's3://bucket/prefix' "
            f"string, got {type(prefix).__name__} {prefix!r}"
        )
    uri = _s3_uri(prefix, "prefix")
    if uri is None:
        raise ValueError(f"S3LightningCheckpoint: the prefix {prefix!r} is not an s3:// URI")
    return uri
