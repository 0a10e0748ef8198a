"""An fsspec filesystem for ``s3://`` over ``s3torch.client``: what Lightning's directories need.

Lightning's ``ModelCheckpoint``, its loggers and ``Trainer(default_root_dir=...)``
reach ``s3://`` paths through fsspec (``exists``, ``ls``, ``isdir``,
``makedirs``, ``open``, ``modified``, ``rm``). fsspec's own ``s3`` entry is
s3fs; without it they fail with "Install s3fs to access S3", and with it they
use s3fs's endpoint and credentials, not the plugin's.

:class:`S3FsspecFileSystem` implements those operations with an
:class:`~s3torch.client.S3Client`. Which client: the one passed to it, else the
client of the most recent :class:`~s3torch.lightning.S3LightningCheckpoint`
(so Lightning's directory operations go to the plugin's endpoint with its
credentials), else one made from the environment (``AWS_REGION``, else
``us-east-1``; ``AWS_ENDPOINT_URL`` is honoured by the client).

How it coexists with s3fs (see ``docs/lightning.md``):

- s3fs not installed: importing ``s3torch.lightning`` registers this class for
  ``s3://`` and ``s3a://`` in fsspec, where nothing else could serve them.
- s3fs installed: s3fs keeps ``s3://`` for every fsspec user in the process
  (pandas, datasets, your own code); nothing of s3torch changes that unless
  you ask: ``S3LightningCheckpoint(..., override_s3fs=True)`` or
  :func:`register_s3_filesystem(override=True) <register_s3_filesystem>`.

Paths are fsspec's: ``bucket/key`` without the protocol (as s3fs returns them);
``s3://bucket/key`` is accepted everywhere. Directories are key prefixes:
``mkdir``/``makedirs`` create nothing (S3 has no directories), ``rmdir`` does
nothing, and a "directory" exists while some key lies under it.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

from fsspec.spec import AbstractFileSystem

from s3torch.client import (
    ObjectInfo,
    S3Client,
    S3ClientConfig,
    S3NotFoundError,
    parse_s3_uri,
)
from s3torch.readers import S3ReaderConstructor, get_object

from .client_binding import current_client
from .files import AbortingText, AbortingWriter

__all__ = ["PROTOCOLS", "S3FsspecFileSystem"]

log = logging.getLogger(__name__)

PROTOCOLS = ("s3", "s3a")
"""The fsspec protocols this filesystem serves."""


class S3FsspecFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """fsspec over ``s3torch.client``: list, stat, open, remove and copy S3 objects.

    Args:
        client: The client to use. Default: the client of the most recent
            ``S3LightningCheckpoint`` (see :func:`use_client`), else one from the
            environment.
        region: Make a client of its own in this region instead (required
            for a client of its own).
        endpoint: The endpoint of a client of its own.
        s3client_config: The configuration of a client of its own.

    Any other storage option (s3fs's ``anon``, ``key``, ``client_kwargs``...)
    raises ``TypeError`` naming it: configure s3torch's client instead.

    Writing (``open(path, "wb")``, ``"w"``, ``"ab"``, ``pipe``) uploads on
    ``close()``; leaving the ``with`` block with an exception aborts the upload,
    so no object (and no half-written one) appears, and so does a file that is
    garbage-collected unclosed. Appending rewrites the object (S3 cannot
    append): fine for logs, not for large files.
    """

    protocol = PROTOCOLS
    root_marker = ""
    cachable = False  # instances are cheap; the client is resolved per call

    def __init__(
        self,
        *args: Any,
        client: S3Client | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        s3client_config: S3ClientConfig | None = None,
        **storage_options: Any,
    ) -> None:
        unknown = sorted(set(storage_options) - {"skip_instance_cache", "use_listings_cache"})
        if args or unknown:
            named = ", ".join([*map(repr, args), *unknown])
            raise TypeError(
                f"S3FsspecFileSystem does not take {named}: it is configured with "
                "client=, or region=, endpoint= and s3client_config= (s3torch.client)"
            )
        super().__init__()
        if client is not None and not isinstance(client, S3Client):
            raise TypeError(f"client must be an s3torch.client.S3Client, got {client!r}")
        if client is None and region is None and (endpoint, s3client_config) != (None, None):
            raise TypeError("S3FsspecFileSystem: endpoint= and s3client_config= need region=")
        if client is None and region is not None:
            client = S3Client(region, endpoint=endpoint, s3client_config=s3client_config)
        self._client = client

    @property
    def client(self) -> S3Client:
        """The client this filesystem uses now."""
        return self._client if self._client is not None else current_client()

    # ------------------------------------------------------------------ paths
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        for protocol in PROTOCOLS:
            if text.startswith(f"{protocol}://"):
                text = text[len(protocol) + 3 :]
                break
        return text.rstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        """``bucket/key`` -> ``s3://bucket/key``."""
        return f"s3://{self._strip_protocol(name)}"

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        """``bucket/key`` (or ``s3://bucket/key``) -> ``(bucket, key)``; the key may be empty."""
        stripped = S3FsspecFileSystem._strip_protocol(path)
        if not stripped:
            raise ValueError(
                f"{path!r} names no bucket: S3FsspecFileSystem works inside a bucket "
                "('s3://bucket/prefix'), it cannot list buckets"
            )
        bucket, key = parse_s3_uri(f"s3://{stripped}")
        return bucket, key

    # ----------------------------------------------------------------- listing
    @staticmethod
    def _file_entry(info: ObjectInfo) -> dict[str, Any]:
        return {
            "name": f"{info.bucket}/{info.key}",
            "size": info.size,
            "type": "file",
            "ETag": info.etag,
            "LastModified": info.last_modified,
            "StorageClass": info.storage_class or "STANDARD",
        }

    @staticmethod
    def _dir_entry(name: str) -> dict[str, Any]:
        return {
            "name": name.rstrip("/"),
            "size": 0,
            "type": "directory",
            "StorageClass": "DIRECTORY",
        }

    def _entries(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """The objects and common prefixes directly under ``prefix`` ("" or ending with "/")."""
        entries: list[dict[str, Any]] = []
        for page in self.client.list_objects(bucket, prefix=prefix, delimiter="/"):
            entries.extend(self._dir_entry(f"{bucket}/{p}") for p in page.common_prefixes)
            entries.extend(self._file_entry(info) for info in page.objects if info.key != prefix)
        entries.sort(key=lambda entry: str(entry["name"]))
        return entries

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[dict[str, Any]] | list[str]:
        """What lies directly under ``path`` (a file lists as itself).

        Raises:
            FileNotFoundError: nothing exists at or under ``path``.
        """
        bucket, key = self._split(path)
        entries = self._entries(bucket, f"{key}/" if key else "")
        if not entries and key:
            entries = [self.info(path)]  # a file, or FileNotFoundError
        return entries if detail else [str(entry["name"]) for entry in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """A file's size, ETag and ``LastModified``, or a directory entry.

        Raises:
            FileNotFoundError: no object is named ``path`` and none lies under it.
        """
        bucket, key = self._split(path)
        if key:
            try:
                return self._file_entry(self.client.head_object(bucket, key))
            except S3NotFoundError:
                pass
        for page in self.client.list_objects(bucket, prefix=f"{key}/" if key else "", max_keys=1):
            if page.objects or page.common_prefixes or not key:
                return self._dir_entry(f"{bucket}/{key}" if key else bucket)
        raise FileNotFoundError(f"s3://{bucket}/{key}: no such object or prefix")

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        try:
            return bool(self.info(path)["type"] == "directory")
        except FileNotFoundError:
            return False

    def isfile(self, path: str) -> bool:
        bucket, key = self._split(path)
        if not key:
            return False
        try:
            self.client.head_object(bucket, key)
        except S3NotFoundError:
            return False
        return True

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every object under ``path`` (one flat listing; a file finds itself)."""
        if maxdepth is not None or withdirs:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        bucket, key = self._split(path)
        found: dict[str, dict[str, Any]] = {}
        if key and self.isfile(path):
            entry = self.info(path)
            found[entry["name"]] = entry
        for page in self.client.list_objects(bucket, prefix=f"{key}/" if key else ""):
            for info in page.objects:
                entry = self._file_entry(info)
                found[entry["name"]] = entry
        ordered = dict(sorted(found.items()))
        return ordered if detail else list(ordered)

    def modified(self, path: str) -> datetime:
        """When the object was last written (timezone-aware, UTC)."""
        bucket, key = self._split(path)
        info = self.client.head_object(bucket, key)
        if info.last_modified is None:
            raise OSError(f"s3://{bucket}/{key}: the server sent no Last-Modified date")
        return info.last_modified

    def created(self, path: str) -> datetime:
        """S3 keeps no creation time: the last write is the creation of the current object."""
        return self.modified(path)

    # ------------------------------------------------------------ directories
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: S3 has no directories (a prefix exists once a key is under it)."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: S3 has no directories (a prefix exists once a key is under it)."""

    def rmdir(self, path: str) -> None:
        """Nothing to do: a prefix disappears with the last key under it."""

    # ---------------------------------------------------------------- removal
    def rm_file(self, path: str) -> None:
        bucket, key = self._split(path)
        self.client.delete_object(bucket, key)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete the object ``path`` (with ``recursive=True``: every object under it too).

        ``path`` may be a list. Deletes go out in batches of up to 1,000 keys.

        Raises:
            FileNotFoundError: nothing to delete at ``path``.
            IsADirectoryError: ``path`` is a prefix and ``recursive`` is false.
        """
        if maxdepth is not None:
            super().rm(path, recursive=recursive, maxdepth=maxdepth)
            return
        by_bucket: dict[str, list[str]] = {}
        for one in path if isinstance(path, list) else [path]:
            if recursive:
                names: list[str] = self.find(one)
            elif self.isfile(one):
                names = [self._strip_protocol(one)]
            elif self.isdir(one):
                raise IsADirectoryError(
                    f"s3://{self._strip_protocol(one)} is a prefix: rm(recursive=True)"
                )
            else:
                names = []
            if not names:
                raise FileNotFoundError(f"s3://{self._strip_protocol(one)}: nothing to delete")
            for name in names:
                bucket, key = self._split(name)
                by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            self.client.delete_objects(bucket, keys)

    # ---------------------------------------------------------- reading/writing
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> io.BufferedIOBase:
        bucket, key = self._split(path)
        if not key:
            raise IsADirectoryError(f"s3://{bucket} is a bucket, not an object")
        if not autocommit:
            raise NotImplementedError("S3FsspecFileSystem has no transactions")
        if mode == "rb":
            try:
                info = self.client.head_object(bucket, key)
            except S3NotFoundError as error:
                raise FileNotFoundError(f"s3://{bucket}/{key}: no such object") from error
            return get_object(
                self.client,
                bucket,
                key,
                reader_constructor=S3ReaderConstructor.sequential(),
                object_info=info,
            )
        if mode == "wb":
            return AbortingWriter(self.client.put_object(bucket, key))
        if mode == "ab":
            existing = self.cat_file(path) if self._listed(bucket, key) else b""
            writer = AbortingWriter(self.client.put_object(bucket, key))
            writer.write(existing)
            return writer
        raise ValueError(
            f"S3FsspecFileSystem cannot open s3://{bucket}/{key} in mode {mode!r}: "
            "use 'rb', 'wb' or 'ab' (or their text forms)"
        )

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        """Like fsspec's ``open``; a text-mode writer also aborts when its block raises."""
        if "b" in mode or "r" in mode:
            return super().open(path, mode, **kwargs)
        text_options = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
        raw = super().open(path, mode.replace("t", "") + "b", **kwargs)
        return AbortingText(raw, **text_options)

    def _listed(self, bucket: str, key: str) -> bool:
        """Whether the object exists, asked without an error for "no" (unlike HEAD).

        A caught S3 error keeps its callers' frames alive for as long as the
        request that failed (s3torch.client), and with them the writer that
        ``open(path, "ab")`` makes next: that writer could then never be
        collected, so never aborted. An exact key lists first under its own name.
        """
        for page in self.client.list_objects(bucket, prefix=key, max_keys=1):
            return bool(page.objects) and page.objects[0].key == key
        return False

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """The object's bytes (``[start, end)`` of them; negative offsets count from the end)."""
        bucket, key = self._split(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.client.head_object(bucket, key).size
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        with self.client.get_object_stream(bucket, key, start=start or 0, end=end) as stream:
            data = stream.read()
        return bytes(data)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        bucket, key = self._split(path)
        with self.client.put_object(bucket, key) as writer:
            writer.write(value)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        source_bucket, source_key = self._split(path1)
        target_bucket, target_key = self._split(path2)
        self.client.copy_object(source_bucket, source_key, target_bucket, target_key)
