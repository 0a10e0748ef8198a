"""S3LightningCheckpoint: a Lightning ``CheckpointIO`` that saves, loads and removes on S3."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import IO, Any, cast

import torch

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from s3torch.checkpoint import S3Checkpoint
from s3torch.client import S3Client, S3ClientConfig, parse_s3_uri
from s3torch.readers import S3ReaderConstructorProtocol

from .client_binding import use_client
from .registration import register_s3_filesystem

__all__ = ["S3LightningCheckpoint"]

log = logging.getLogger(__name__)

_LAST = re.compile(r"last.*\.ckpt")  # Lightning's "last" files: last.ckpt, last-v1.ckpt, ...


class S3LightningCheckpoint(CheckpointIO):
    """Save Lightning checkpoints to S3 with ``torch.save``, load them back, remove them.

    >>> trainer = Trainer(plugins=[S3LightningCheckpoint("us-east-1")],
    ...                   default_root_dir="s3://my-bucket/run-1")

    Args:
        region: The bucket's AWS region.
        s3client_config: Client settings (part size, retries, ...).
        endpoint: An S3 endpoint other than AWS's (``http://127.0.0.1:9000``).
        client: An existing :class:`~s3torch.client.S3Client` to share (it is
            not closed here); ``region``, ``endpoint`` and ``s3client_config``
            are then ignored.
        reader_constructor: How checkpoints are read back (default: sequential).
        override_s3fs: Serve ``s3://`` in fsspec with s3torch for the whole
            process even where s3fs is installed (see ``docs/lightning.md``).

    Making the plugin points Lightning's own ``s3://`` directory operations
    (``ModelCheckpoint``, loggers, ``default_root_dir``) at its client, through
    :class:`~s3torch.lightning.S3FsspecFileSystem` wherever fsspec has no other
    ``s3://`` implementation.

    Saving uploads while ``torch.save`` writes; if anything fails, the upload
    is aborted and no object (old or half-written) is left at that key by this
    save. Wrap it in Lightning's ``AsyncCheckpointIO`` to upload in the
    background. Paths are ``s3://bucket/key`` strings; anything else raises
    ``TypeError`` (not a string) or ``ValueError`` (not an S3 URI), naming it.
    """

    def __init__(
        self,
        region: str,
        s3client_config: S3ClientConfig | None = None,
        endpoint: str | None = None,
        *,
        client: S3Client | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        override_s3fs: bool = False,
    ) -> None:
        super().__init__()
        if client is not None and not isinstance(client, S3Client):
            raise TypeError(f"client must be an s3torch.client.S3Client, got {client!r}")
        self._client = (
            client
            if client is not None
            else S3Client(region, endpoint=endpoint, s3client_config=s3client_config)
        )
        self._checkpoint = S3Checkpoint(
            region, reader_constructor=reader_constructor, client=self._client
        )
        self._saving: Counter[str] = Counter()  # saves in flight, by URI
        self._remove_after_save: set[str] = set()
        self._saving_changed = threading.Condition()
        use_client(self._client)
        register_s3_filesystem(override=override_s3fs)

    @property
    def client(self) -> S3Client:
        """The client this plugin (and Lightning's ``s3://`` directory operations) use."""
        return self._client

    # ------------------------------------------------------------ CheckpointIO
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """``torch.save(checkpoint)`` to ``path`` (``s3://bucket/key``).

        Raises:
            TypeError: ``path`` is not a string, or ``storage_options`` were given.
            ValueError: ``path`` is not an ``s3://bucket/key`` URI.
            S3Exception: the upload failed; no object was written.
        """
        uri = _checkpoint_uri(path)
        if storage_options is not None:
            raise TypeError(
                f"S3LightningCheckpoint.save_checkpoint({uri!r}) takes no storage_options "
                f"(got {storage_options!r}): configure the plugin's S3ClientConfig instead"
            )
        with self._saving_changed:
            self._saving[uri] += 1
        try:
            with self._checkpoint.writer(uri) as writer:
                torch.save(checkpoint, cast("IO[bytes]", writer))
        finally:
            with self._saving_changed:
                self._saving[uri] -= 1
                remove = not self._saving[uri] and uri in self._remove_after_save
                if not self._saving[uri]:
                    del self._saving[uri]
                    self._remove_after_save.discard(uri)
                self._saving_changed.notify_all()
            if remove:
                self._delete(uri)
        log.debug("saved checkpoint %s", uri)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | Any | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """``torch.load`` the checkpoint at ``path`` (``s3://bucket/key``).

        Args:
            map_location: As for ``torch.load``.
            weights_only: As for ``torch.load`` (Lightning >= 2.6 passes it;
                ``None`` keeps torch's default, which is ``True``).

        Raises:
            TypeError, ValueError: ``path`` is not an ``s3://`` URI string.
            FileNotFoundError: no object at ``path`` (an ``S3NotFoundError``).
        """
        uri = _checkpoint_uri(path)
        self._wait_for_saves_of(uri)
        with self._checkpoint.reader(uri) as reader:
            loaded: dict[str, Any] = torch.load(
                cast("IO[bytes]", reader), map_location=map_location, weights_only=weights_only
            )
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint at ``path``; one that does not exist is no error.

        If a save of the same path is still uploading (``AsyncCheckpointIO``),
        this returns at once and the object is deleted when that save ends,
        so it cannot reappear after the delete and the loop does not wait.
        """
        uri = _checkpoint_uri(path)
        with self._saving_changed:
            if self._saving[uri]:
                self._remove_after_save.add(uri)
                log.debug("removing checkpoint %s once its save in flight ends", uri)
                return
        self._delete(uri)

    def _delete(self, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        self._client.delete_object(bucket, key)
        log.debug("removed checkpoint %s", uri)

    def teardown(self) -> None:
        """Nothing to release: the client stays usable for the trainer's next run.

        Saves are synchronous here; ``AsyncCheckpointIO.teardown`` waits for its
        background saves and raises the first failure.
        """

    # ------------------------------------------------------------------ extras
    def find_last_checkpoint(self, prefix: str) -> str | None:
        """The newest ``last*.ckpt`` under ``prefix`` (any depth), or ``None``.

        Use it where Lightning's ``ckpt_path="last"`` cannot look on S3::

            trainer.fit(model, ckpt_path=plugin.find_last_checkpoint("s3://my-bucket/run-1"))

        (``None`` starts from scratch, like ``"last"`` with nothing saved yet.)
        "Newest" is the latest ``LastModified``; a tie goes to the greater key.

        Raises:
            TypeError, ValueError: ``prefix`` is not an ``s3://`` URI string.
        """
        uri = _s3_uri(prefix, "prefix")
        bucket, key = parse_s3_uri(uri)
        listing_prefix = f"{key.rstrip('/')}/" if key else ""
        newest: tuple[Any, str] | None = None
        for page in self._client.list_objects(bucket, prefix=listing_prefix):
            for info in page.objects:
                if not _LAST.fullmatch(PurePosixPath(info.key).name):
                    continue
                candidate = (info.last_modified, info.key)
                if newest is None or candidate > newest:
                    newest = candidate
        return None if newest is None else f"s3://{bucket}/{newest[1]}"

    def _wait_for_saves_of(self, uri: str) -> None:
        with self._saving_changed:
            self._saving_changed.wait_for(lambda: not self._saving[uri])


def _s3_uri(path: object, what: str) -> str:
    if not isinstance(path, str):
        raise TypeError(
            f"S3LightningCheckpoint: the checkpoint {what} must be an 's3://bucket/key' "
            f"string, got {type(path).__name__} {path!r}"
        )
    if path.startswith("s3:/") and not path.startswith("s3://"):
        raise ValueError(
            f"S3LightningCheckpoint: {path!r} is not an S3 URI; it looks like 's3://...' "
            "after os.path.normpath (as Lightning's ckpt_path='last' does): pass the "
            "s3:// URI, e.g. from S3LightningCheckpoint.find_last_checkpoint()"
        )
    parse_s3_uri(path)  # ValueError naming the URI
    return path


def _checkpoint_uri(path: object) -> str:
    uri = _s3_uri(path, "path")
    if not parse_s3_uri(uri)[1]:
        raise ValueError(f"S3LightningCheckpoint: {uri!r} names a bucket, not an object")
    return uri
