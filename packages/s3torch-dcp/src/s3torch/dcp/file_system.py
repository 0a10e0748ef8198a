"""S3FileSystem: torch DCP's ``FileSystemBase`` on S3 objects."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Generator
from contextlib import contextmanager

from torch.distributed.checkpoint.filesystem import FileSystemBase

from s3torch.client import S3Client, S3ClientConfig, S3NotFoundError, parse_s3_uri
from s3torch.readers import S3ReaderConstructor, S3ReaderConstructorProtocol, get_object

from . import _paths
from ._client import resolve_client
from ._lifetime import Closeable

__all__ = ["S3FileSystem"]

log = logging.getLogger(__name__)


class S3FileSystem(FileSystemBase, Closeable):
    """The file operations torch's DCP storage classes need, on S3.

    Paths are ``s3://bucket/key`` strings. Writing streams to a multipart
    upload that becomes visible only when the stream closes normally (an
    exception aborts it); reading opens a reader of ``reader_constructor``'s
    kind.

    Args:
        region: The bucket's region (``"us-east-1"``).
        s3_client: An existing client to use (the seed's name for ``client``).
        s3client_config: Client settings (part size, memory budget, retries).
        reader_constructor: The reader kind ``create_stream(path, "rb")``
            opens (default: sequential).
        endpoint: Where to send requests (``"http://127.0.0.1:9000"``);
            default: the AWS endpoint of ``region``. Keyword-only, as is
            ``client``; the four above may be given positionally, in the
            seed's (s3torchconnector's) order.
        client: An existing :class:`~s3torch.client.S3Client` to share; it is
            left open by :meth:`close`. A client this object made is closed.

    Example::

        fs = S3FileSystem("us-east-1")
        with fs.create_stream("s3://my-bucket/ckpt/notes.txt", "wb") as stream:
            stream.write(b"step 100")
    """

    def __init__(
        self,
        region: str,
        s3_client: S3Client | None = None,
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        *,
        endpoint: str | None = None,
        client: S3Client | None = None,
    ) -> None:
        if s3_client is not None and client is not None and s3_client is not client:
            raise ValueError("pass the client once: s3_client= and client= name the same thing")
        self._reader_constructor = reader_constructor or S3ReaderConstructor.default()
        self._client, self._owns_client = resolve_client(
            region,
            endpoint=endpoint,
            s3client_config=s3client_config,
            client=client or s3_client,
            reader_type=S3ReaderConstructor.get_reader_type_string(self._reader_constructor),
        )

    @property
    def client(self) -> S3Client:
        """The client every operation goes through."""
        return self._client

    @property
    def reader_constructor(self) -> S3ReaderConstructorProtocol:
        """The reader kind ``create_stream(path, "rb")`` opens."""
        return self._reader_constructor

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the client if this object made it (a given client stays open)."""
        if self._owns_client:
            self._client.close()

    # ------------------------------------------------------------- streams
    @contextmanager
    def create_stream(
        self, path: str | os.PathLike[str], mode: str
    ) -> Generator[io.IOBase, None, None]:
        """Open ``path`` for writing (``"wb"``) or reading (``"rb"``).

        A write stream's object appears only when the block ends normally; an
        exception inside the block aborts the upload and nothing is written.

        Raises:
            ValueError: any other mode, or a path that is not an ``s3://`` URI.
        """
        if mode not in ("rb", "wb"):
            raise ValueError(
                f"Invalid mode {mode!r} for {os.fspath(path)!r}: S3FileSystem.create_stream "
                "supports 'rb' (read) and 'wb' (write)"
            )
        bucket, key = _paths.split(path)
        if mode == "wb":
            log.debug("create_stream: writing s3://%s/%s", bucket, key)
            with self._client.put_object(bucket, key) as writer:
                yield writer
        else:
            log.debug("create_stream: reading s3://%s/%s", bucket, key)
            with get_object(
                self._client, bucket, key, reader_constructor=self._reader_constructor
            ) as reader:
                yield reader

    # --------------------------------------------------------------- paths
    def concat_path(self, path: str | os.PathLike[str], suffix: str) -> str:
        """``path/suffix`` (``s3://b/ckpt`` + ``__0_0.distcp`` is ``s3://b/ckpt/__0_0.distcp``)."""
        return _paths.join(path, suffix)

    def init_path(self, path: str | os.PathLike[str]) -> str:
        """Check ``path`` and return it as an ``s3://bucket/prefix`` string.

        Raises:
            ValueError: ``path`` is not an ``s3://`` URI; the message quotes it.
        """
        return _paths.to_uri(path)

    def mkdir(self, path: str | os.PathLike[str]) -> None:
        """Nothing to do: S3 has no directories."""

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """Whether ``checkpoint_id`` is an ``s3://`` URI (not a local path or ``pathlib.Path``)."""
        return _paths.is_s3_uri(checkpoint_id)

    # ------------------------------------------------------------- objects
    def rename(self, path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> None:
        """Move an object: a server-side copy, then deletion of the source.

        Raises:
            ValueError: the paths are in different buckets.
            S3NotFoundError: the source does not exist (a ``FileNotFoundError``).
        """
        src_bucket, src_key = _paths.split(path)
        dst_bucket, dst_key = _paths.split(new_path)
        if src_bucket != dst_bucket:
            raise ValueError(
                f"rename within one bucket only: {os.fspath(path)!r} -> {os.fspath(new_path)!r}"
            )
        self._client.copy_object(src_bucket, src_key, dst_bucket, dst_key)
        self._client.delete_object(src_bucket, src_key)

    def exists(self, path: str | os.PathLike[str]) -> bool:
        """Whether the object at ``path`` exists (a HEAD request)."""
        bucket, key = _paths.split(path)
        try:
            self._client.head_object(bucket, key)
        except S3NotFoundError:
            return False
        return True

    def rm_file(self, path: str | os.PathLike[str]) -> None:
        """Delete the object at ``path`` (deleting a missing object succeeds)."""
        bucket, key = _paths.split(path)
        self._client.delete_object(bucket, key)

    def ls(self, path: str | os.PathLike[str]) -> list[str]:
        """The URIs of the objects and "subdirectories" directly under ``path``."""
        uri = _paths.to_uri(path)
        bucket, key = parse_s3_uri(uri)
        prefix = f"{key}/" if key else ""
        found: list[str] = []
        for page in self._client.list_objects(bucket, prefix, delimiter="/"):
            found.extend(f"s3://{bucket}/{info.key}" for info in page.objects)
            found.extend(f"s3://{bucket}/{common.rstrip('/')}" for common in page.common_prefixes)
        return sorted(found)
