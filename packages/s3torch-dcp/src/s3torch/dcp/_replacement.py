"""Atomic overwrite: a save's files get names of their own; the old ones go once it is out.

With ``S3StorageWriter(..., atomic_overwrite=True)`` every data file of a
save is named ``<prefix><n>-<token>.distcp``, where ``token`` is made fresh
for the save, so no upload ever replaces a file the checkpoint already at
the location is made of. ``.metadata`` (which names every file, so any DCP
reader loads any names) replaces the old one last, in one PUT: until then
the old checkpoint loads, unchanged; from then on the new one does.

Only after that are the files the new ``.metadata`` does not name deleted:
those the old ``.metadata`` named (read before the save starts), and any
file in the new save's rank directories whose name has the writer's shape
(``<rank prefix><n>.distcp`` or ``<rank prefix><n>-<token>.distcp``): the
leftovers of an earlier save that was killed before it published.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable

from s3torch.readers import S3ReaderConstructor, get_object

from . import _paths
from ._metadata_pickle import load_metadata
from .file_system import S3FileSystem

__all__ = ["data_file_name", "files_named_at", "new_token", "read_bytes", "stale_files"]

log = logging.getLogger(__name__)

SUFFIX = ".distcp"
TOKEN_HEX = 16
"""Hex digits of a save's token: 64 random bits, so no two saves share names."""


def new_token() -> str:
    """A token unique to one save."""
    return uuid.uuid4().hex[:TOKEN_HEX]


def data_file_name(prefix: str, number: int, token: str) -> str:
    """The relative key of file ``number`` of a rank: torch's fixed name without a token."""
    if not token:
        return f"{prefix}{number}{SUFFIX}"
    return f"{prefix}{number}-{token}{SUFFIX}"


def read_bytes(fs: S3FileSystem, uri: str) -> bytes:
    """The whole object at ``uri``."""
    bucket, key = _paths.split(uri)
    with get_object(
        fs.client, bucket, key, reader_constructor=S3ReaderConstructor.sequential()
    ) as reader:
        return bytes(reader.read())


def files_named_at(fs: S3FileSystem, metadata_uri: str) -> set[str]:
    """The relative keys of the data files the ``.metadata`` at ``metadata_uri`` names.

    Empty if it cannot be read or is not DCP metadata (logged): the listing
    of :func:`stale_files` still finds files of the writer's own shape.
    """
    try:
        metadata = load_metadata(read_bytes(fs, metadata_uri), metadata_uri)
    except Exception as error:
        log.warning("could not read the old checkpoint's %s: %s", metadata_uri, error)
        return set()
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        return set()
    # Only data files: nothing else at the location is ever deleted.
    return {
        str(info.relative_path)
        for info in storage.values()
        if str(info.relative_path).endswith(SUFFIX)
    }


def stale_files(
    fs: S3FileSystem, path: str, rank_prefixes: Iterable[str], keep: set[str], old: set[str]
) -> list[str]:
    """The URIs under checkpoint ``path`` to delete once a save naming ``keep`` is published.

    Args:
        fs: Where the checkpoint is.
        path: The checkpoint location, ``s3://bucket/prefix``.
        rank_prefixes: The new save's rank prefixes (relative to ``path``):
            files in their directories with the writer's name shape are listed.
        keep: The relative keys the new ``.metadata`` names (never deleted).
        old: The relative keys the old ``.metadata`` named.
    """
    bucket, base = _paths.split(path)
    base = f"{base.rstrip('/')}/" if base else ""
    by_directory: dict[str, list[str]] = {}
    for prefix in set(rank_prefixes):
        directory, _, name = prefix.rpartition("/")
        by_directory.setdefault(f"{directory}/" if directory else "", []).append(name)
    found = set(old)
    for directory, names in sorted(by_directory.items()):
        pattern = re.compile(
            "(?:"
            + "|".join(re.escape(name) for name in sorted(names))
            + rf")\d+(?:-[0-9a-f]{{{TOKEN_HEX}}})?{re.escape(SUFFIX)}"
        )
        listing_prefix = f"{base}{directory}"
        for page in fs.client.list_objects(bucket, listing_prefix, delimiter="/"):
            for info in page.objects:
                name = info.key[len(listing_prefix) :]
                if pattern.fullmatch(name):
                    found.add(f"{directory}{name}")
    return [f"s3://{bucket}/{base}{relative}" for relative in sorted(found - keep)]
