"""S3LightningCheckpoint: a Lightning ``CheckpointIO`` that saves, loads and removes on S3."""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import IO, Any, cast

import torch

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from s3torch.checkpoint import S3Checkpoint, masked_interrupt
from s3torch.client import S3Client, S3ClientConfig, check_shared_client, parse_s3_uri
from s3torch.readers import S3ReaderConstructorProtocol

from .client_binding import bind_client_source
from .paths import checkpoint_uri, prefix_uri
from .pending import PendingSaves
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
        client: An existing :class:`~s3torch.client.S3Client` to share (one
            connection pool); the plugin never closes it. Pass either
            ``client`` or ``endpoint``/``s3client_config``, not both, and a
            client of ``region``.
        reader_constructor: How checkpoints are read back (default: the
            validating :class:`~s3torch.checkpoint.S3CheckpointReader`).
        override_s3fs: Serve ``s3://`` in fsspec with s3torch for the whole
            process even where s3fs is installed (see ``docs/lightning.md``).

    Making (or unpickling) the plugin points Lightning's own ``s3://``
    directory operations (``ModelCheckpoint``, loggers, ``default_root_dir``)
    at its client, through :class:`~s3torch.lightning.S3FsspecFileSystem`
    wherever fsspec has no other ``s3://`` implementation.

    Saving uploads while ``torch.save`` writes; if anything fails, the upload
    is aborted and no object (old or half-written) is left at that key by this
    save. Wrap it in :class:`~s3torch.lightning.S3AsyncCheckpointIO` to upload
    in the background. Paths are ``s3://bucket/key`` strings; a local path is
    handled as Lightning's ``TorchCheckpointIO`` does (the spawn launchers use
    one); a non-string raises ``TypeError``, another scheme ``ValueError``.

    The plugin pickles as its settings (Lightning's ``ddp_spawn`` does so): the
    copy makes its own client on first use, with the same settings (those of
    a client given, which cannot cross a process; the copy owns and closes
    its client).

    Raises:
        TypeError: ``client`` is not an :class:`~s3torch.client.S3Client`.
        ValueError: a malformed region or endpoint, ``client`` together with
            ``endpoint``/``s3client_config``, or a client of another region.
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
        check_shared_client(
            client, region=region, endpoint=endpoint, s3client_config=s3client_config
        )
        self._region = region
        self._endpoint = endpoint
        self._s3client_config = s3client_config
        self._reader_constructor = reader_constructor
        self._override_s3fs = override_s3fs
        self._given_client = client
        self._client_template: S3Client | None = None  # in a copy of a plugin given a client
        self._own_client: S3Client | None = None
        if client is None:  # a malformed region or endpoint fails here, not at first use
            self._own_client = self._make_client()
        self._start()

    def _start(self) -> None:
        """What a new plugin and an unpickled copy both need."""
        self._client_lock = threading.Lock()
        self._pending = PendingSaves()
        self._local: TorchCheckpointIO | None = None
        bind_client_source(lambda: self.client)
        register_s3_filesystem(override=self._override_s3fs)

    def _make_client(self) -> S3Client:
        if self._client_template is not None:
            return copy.copy(self._client_template)  # a new client with its settings
        return S3Client(
            self._region, endpoint=self._endpoint, s3client_config=self._s3client_config
        )

    # ---------------------------------------------------------------- settings
    @property
    def region(self) -> str:
        """The region requests are signed for."""
        return self._region

    @property
    def client(self) -> S3Client:
        """The client this plugin (and Lightning's ``s3://`` directory operations) use.

        The one given, else the plugin's own, made again on first use after
        :meth:`teardown` or :meth:`close` closed it.
        """
        if self._given_client is not None:
            return self._given_client
        with self._client_lock:
            if self._own_client is None:
                self._own_client = self._make_client()
            return self._own_client

    def _checkpoint(self) -> S3Checkpoint:
        client = self.client
        return S3Checkpoint(
            client.region, reader_constructor=self._reader_constructor, client=client
        )

    def _local_io(self) -> TorchCheckpointIO:
        if self._local is None:
            self._local = TorchCheckpointIO()
        return self._local

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "region": self._region,
            "endpoint": self._endpoint,
            "s3client_config": self._s3client_config,
            "reader_constructor": self._reader_constructor,
            "override_s3fs": self._override_s3fs,
            # An S3Client pickles as its settings: the copy is a client of its own.
            "client": self._given_client,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._region = state["region"]
        self._endpoint = state["endpoint"]
        self._s3client_config = state["s3client_config"]
        self._reader_constructor = state["reader_constructor"]
        self._override_s3fs = state["override_s3fs"]
        self._given_client = None
        self._client_template = state["client"]  # the settings of a client given, or None
        self._own_client = None  # made on first use
        self._start()

    # ------------------------------------------------------------ CheckpointIO
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """``torch.save(checkpoint)`` to ``path`` (``s3://bucket/key``).

        Raises:
            TypeError: ``path`` is not a string or path, or ``storage_options`` were given.
            ValueError: ``path`` is not an ``s3://bucket/key`` URI or a local path.
            S3Exception: the upload failed; no object was written.
        """
        uri = checkpoint_uri(path)
        if storage_options is not None:
            raise TypeError(
                f"S3LightningCheckpoint.save_checkpoint({path!r}) takes no storage_options "
                f"(got {storage_options!r}): configure the plugin's S3ClientConfig instead"
            )
        if uri is None:
            self._local_io().save_checkpoint(checkpoint, path)
            return
        self._save_announced(checkpoint, uri, self._pending.announce(uri))

    def _announce_save(self, path: Any) -> int | None:
        """Record a save of ``path`` that will run later (``S3AsyncCheckpointIO``).

        Returns:
            The ticket to pass to :meth:`_save_announced` or :meth:`_withdraw_save`;
            None for a local path.

        Raises:
            TypeError, ValueError: as :meth:`save_checkpoint`, for ``path``.
        """
        uri = checkpoint_uri(path)
        return None if uri is None else self._pending.announce(uri)

    def _withdraw_save(self, path: Any, ticket: int) -> None:
        """The announced save ``ticket`` of ``path`` will not run."""
        uri = checkpoint_uri(path)
        if uri is not None and self._pending.end(uri, ticket):
            self._delete(uri)

    def _save_announced(self, checkpoint: dict[str, Any], path: Any, ticket: int | None) -> None:
        """Run the save :meth:`_announce_save` recorded (``ticket`` None: a local path)."""
        uri = checkpoint_uri(path)
        if uri is None or ticket is None:
            self.save_checkpoint(checkpoint, path)
            return
        try:
            with self._checkpoint().writer(uri) as writer:
                torch.save(checkpoint, cast("IO[bytes]", writer))
            log.debug("saved checkpoint %s", uri)
        except Exception as error:
            interrupt = masked_interrupt(error)
            if interrupt is None:
                raise
            raise interrupt from error  # a Ctrl-C torch reported as its own error
        finally:
            remove = self._pending.end(uri, ticket)
            if remove:
                self._delete(uri)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | Any | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """``torch.load`` the checkpoint at ``path`` (``s3://bucket/key``).

        Waits for the saves of ``path`` still pending (queued or uploading).

        Args:
            map_location: As for ``torch.load``.
            weights_only: As for ``torch.load`` (Lightning >= 2.6 passes it;
                ``None`` keeps torch's default, which is ``True``).

        Raises:
            TypeError, ValueError: ``path`` is not an ``s3://`` URI string or local path.
            FileNotFoundError: no object at ``path`` (an ``S3NotFoundError``).
            S3Exception: the download failed or the checkpoint is corrupt.
        """
        uri = checkpoint_uri(path)
        if uri is None:
            options = {} if weights_only is None else {"weights_only": weights_only}
            return self._local_io().load_checkpoint(path, map_location, **options)
        self._pending.wait_for(uri)
        try:
            with self._checkpoint().reader(uri) as reader:
                loaded: dict[str, Any] = torch.load(
                    cast("IO[bytes]", reader), map_location=map_location, weights_only=weights_only
                )
        except Exception as error:
            interrupt = masked_interrupt(error)
            if interrupt is None:
                raise
            raise interrupt from error  # a Ctrl-C torch reported as its own error
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint at ``path``; one that does not exist is no error.

        If saves of the same path are pending (queued or uploading), this
        returns at once and the object is deleted when the last of them ends,
        so it cannot reappear after the delete and the loop does not wait.
        """
        uri = checkpoint_uri(path)
        if uri is None:
            self._local_io().remove_checkpoint(path)
            return
        if self._pending.defer_removal(uri):
            log.debug("removing checkpoint %s once the saves pending for it end", uri)
            return
        self._delete(uri)

    def _delete(self, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        self.client.delete_object(bucket, key)
        log.debug("removed checkpoint %s", uri)

    def teardown(self) -> None:
        """Close the client the plugin made (a client given stays open).

        Lightning calls this at the end of ``fit``, ``validate``, ``test`` and
        ``predict``; the plugin stays usable: its next operation makes a new
        client.
        """
        self.close()

    def close(self) -> None:
        """Close the client the plugin made, as :meth:`teardown`. Idempotent."""
        with self._client_lock:
            client, self._own_client = self._own_client, None
        if client is not None:
            client.close()

    def __enter__(self) -> S3LightningCheckpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        bucket, key = parse_s3_uri(prefix_uri(prefix))
        listing_prefix = f"{key.rstrip('/')}/" if key else ""
        newest: tuple[Any, str] | None = None
        for page in self.client.list_objects(bucket, prefix=listing_prefix):
            for info in page.objects:
                if not _LAST.fullmatch(PurePosixPath(info.key).name):
                    continue
                candidate = (info.last_modified, info.key)
                if newest is None or candidate > newest:
                    newest = candidate
        return None if newest is None else f"s3://{bucket}/{newest[1]}"
