"""S3AsyncCheckpointIO: Lightning's background saving, ordered with removals and loads.

Lightning's ``AsyncCheckpointIO`` queues each save on one background thread
and gives the plugin it wraps no sign of a save that is queued but not yet
running: a ``remove_checkpoint`` of that path (``save_top_k``) then deletes
nothing and the save creates the object afterwards, and a ``load_checkpoint``
reads what was there before. :class:`S3AsyncCheckpointIO` announces every save
to the plugin when it is queued, so the plugin orders removals and loads of
the same path after it (see :mod:`s3torch.lightning.pending`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection

from lightning.pytorch.plugins.io import AsyncCheckpointIO

from .checkpoint_io import S3LightningCheckpoint

__all__ = ["S3AsyncCheckpointIO"]

log = logging.getLogger(__name__)


def _snapshot(tensor: torch.Tensor) -> torch.Tensor:
    """A copy taken on the caller's thread: training goes on changing the original."""
    return tensor.detach().clone()


class S3AsyncCheckpointIO(AsyncCheckpointIO):
    """Save checkpoints in the background, through an :class:`S3LightningCheckpoint`.

    >>> plugin = S3AsyncCheckpointIO(S3LightningCheckpoint("us-east-1"))
    >>> trainer = Trainer(plugins=[plugin], default_root_dir="s3://my-bucket/run-1")

    ``save_checkpoint`` copies the checkpoint's tensors, queues the upload on
    one background thread and returns. Compared with Lightning's
    ``AsyncCheckpointIO`` (which it is, for Lightning):

    - a removal of a checkpoint whose save is queued or uploading is done once
      that save has ended (the loop does not wait), so the object cannot
      reappear; a load of it waits for that save and reads what it wrote;
    - a path that is not a checkpoint path, or ``storage_options``, is refused
      at once, on the caller's thread;
    - the first failed save is raised by the next ``save_checkpoint`` and by
      ``teardown``, which also closes the plugin's own client once every
      queued save has ended.

    Args:
        checkpoint_io: The plugin that saves, loads and removes.

    Raises:
        TypeError: ``checkpoint_io`` is not an :class:`S3LightningCheckpoint`.
    """

    def __init__(self, checkpoint_io: S3LightningCheckpoint) -> None:
        if not isinstance(checkpoint_io, S3LightningCheckpoint):
            raise TypeError(
                "S3AsyncCheckpointIO wraps an S3LightningCheckpoint, got "
                f"{type(checkpoint_io).__name__} {checkpoint_io!r}"
            )
        super().__init__(checkpoint_io)
        self._plugin = checkpoint_io
        self._start()

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._saver: ThreadPoolExecutor | None = None
        self._failure: BaseException | None = None

    @property
    def plugin(self) -> S3LightningCheckpoint:
        """The plugin that saves, loads and removes."""
        return self._plugin

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_lock", "_saver", "_failure"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Queue ``torch.save(checkpoint)`` to ``path``; raise an earlier save's failure.

        Raises:
            TypeError, ValueError: as ``S3LightningCheckpoint.save_checkpoint``
                (``path``, ``storage_options``), before anything is queued.
            BaseException: the first failure of an earlier save.
        """
        if storage_options is not None:
            raise TypeError(
                f"S3AsyncCheckpointIO.save_checkpoint({path!r}) takes no storage_options "
                f"(got {storage_options!r}): configure the plugin's S3ClientConfig instead"
            )
        ticket = self._plugin._announce_save(path)
        try:
            snapshot = apply_to_collection(checkpoint, torch.Tensor, _snapshot)
            with self._lock:
                if self._saver is None:
                    self._saver = ThreadPoolExecutor(1, thread_name_prefix="s3torch-save")
                self._saver.submit(self._save, snapshot, path, ticket)
        except BaseException:
            if ticket is not None:
                self._plugin._withdraw_save(path, ticket)
            raise
        self._raise_failure()

    def _save(self, checkpoint: dict[str, Any], path: Any, ticket: int | None) -> None:
        try:
            self._plugin._save_announced(checkpoint, path, ticket)
        except BaseException as error:
            log.debug("the background save of %s failed: %r", path, error)
            with self._lock:
                if self._failure is None:
                    self._failure = error

    def _raise_failure(self) -> None:
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    def teardown(self) -> None:
        """Wait for the queued saves, close the plugin's own client, raise the first failure.

        Lightning calls it at the end of ``fit`` (``test``, ...), and again
        while it shuts down after Ctrl-C: an interrupted wait is taken up by
        the next call, and the client is closed only once no save is left.
        The failure is raised once: the next ``fit`` (or ``test``) starts clean.
        """
        with self._lock:
            saver = self._saver
        if saver is not None:
            saver.shutdown(wait=True)
            with self._lock:
                if self._saver is saver:
                    self._saver = None
        self._plugin.teardown()
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
