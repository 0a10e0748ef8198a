"""S3StorageWriter: DCP saves to S3 that are whole or absent."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pickle
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint import filesystem as _torch_fs
from torch.distributed.checkpoint.filesystem import FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from s3torch.client import S3Client, S3ClientConfig
from s3torch.client.threads import ThreadGroup

from . import _paths
from ._file_job import FileJob, split_items
from ._lifetime import Closeable
from ._parallel import require_thread_count, run_jobs
from ._replacement import data_file_name, files_named_at, new_token, read_bytes, stale_files
from ._writer_options import check_torch_options, save_config
from .errors import S3CheckpointError
from .file_system import S3FileSystem
from .prefix_strategy import DefaultPrefixStrategy, S3PrefixStrategyBase

__all__ = ["S3StorageWriter"]

log = logging.getLogger(__name__)

METADATA = ".metadata"
SUFFIX = ".distcp"


@dataclass(frozen=True)
class StoragePrefix:
    """What a rank's save plan carries: the key prefix of its files, relative to the checkpoint."""

    prefix: str
    token: str = ""
    """Part of every file name of the save (``atomic_overwrite``); empty: torch's fixed names."""


class S3StorageWriter(FileSystemWriter, Closeable):
    """Saves a Distributed Checkpoint to ``s3://bucket/prefix``.

    Every rank uploads its files, ``thread_count`` at a time, each as a
    streamed multipart upload (memory bounded by the client's budget). The
    ``.metadata`` file is written last, by one rank, in one request, only
    after every rank's files are complete: a reader sees the whole checkpoint
    or none. A save that fails aborts every upload it started (no half-written
    objects, no open multipart uploads) and raises
    :class:`~s3torch.dcp.S3CheckpointError` naming the rank and the file.

    Args:
        region: The bucket's region (``"us-east-1"``).
        path: The checkpoint location, ``s3://bucket/prefix``.
        s3client_config: Client settings (part size, memory budget, retries).
            Default: the client's defaults with ``memory_limit`` of 256 MiB
            (the least the CRT takes): a save's parts in flight, of
            all its files together, stay within it (the state dict's own
            tensors are sent in place and cost nothing more).
        prefix_strategy: Where each rank's files go under ``path`` (default:
            ``__<rank>_<n>.distcp`` directly under it); see the prefix strategies.
        thread_count: Files each rank uploads at once (its items are split
            into this many files of about equal size).
        endpoint: Where to send requests (``"http://127.0.0.1:9000"``). It
            and the arguments below are keyword-only; the five above may be
            given positionally, in the seed's (s3torchconnector's) order.
        client: An existing :class:`~s3torch.client.S3Client` to share (left
            open by :meth:`close`).
        overwrite: Replace a checkpoint already at ``path``. Its ``.metadata``
            is deleted before any new file is written, so the location holds no
            checkpoint until the new one is complete (unless
            ``atomic_overwrite``). ``False`` raises :class:`FileExistsError`
            before anything is written.
        atomic_overwrite: Keep the old checkpoint loadable, unchanged, until
            the new one is published (default False): the save's files get
            names of their own (``__<rank>_<n>-<token>.distcp``), the new
            ``.metadata`` replaces the old one in one PUT, and only then are
            the old checkpoint's files deleted, with any leftovers of earlier
            saves that were killed before they published. A save killed at
            any moment leaves the old checkpoint or the new one, whole.
        single_file_per_rank: One file per thread (default) rather than one
            file per tensor.
        per_thread_copy_ahead: As for torch's ``FileSystemWriter``.
        cache_staged_state_dict: As for torch's ``FileSystemWriter``.
        sync_files: Accepted for compatibility and ignored: an S3 object is
            durable once its upload completes.
        **kwargs: Other options of the installed torch's ``FileSystemWriter``,
            passed on to it, as the reference's ``S3StorageWriter`` does: for
            one, ``_extensions=[ZStandard()]`` compresses every item. A name
            it does not take is a :class:`TypeError`; ``serialization_format``
            other than ``TORCH_SAVE`` a :class:`ValueError`.

    Example::

        import torch.distributed.checkpoint as dcp
        writer = S3StorageWriter("us-east-1", "s3://my-bucket/ckpt/step-100", thread_count=4)
        dcp.save(model.state_dict(), storage_writer=writer)
    """

    def __init__(
        self,
        region: str,
        path: str | os.PathLike[str],
        s3client_config: S3ClientConfig | None = None,
        prefix_strategy: S3PrefixStrategyBase | None = None,
        thread_count: int = 1,
        *,
        endpoint: str | None = None,
        client: S3Client | None = None,
        overwrite: bool = True,
        atomic_overwrite: bool = False,
        single_file_per_rank: bool = True,
        per_thread_copy_ahead: int = 10_000_000,
        cache_staged_state_dict: bool = False,
        sync_files: bool = False,
        **kwargs: Any,
    ) -> None:
        require_thread_count(thread_count)
        if not isinstance(atomic_overwrite, bool):
            raise TypeError(
                f"atomic_overwrite must be a bool, got {type(atomic_overwrite).__name__}"
            )
        if prefix_strategy is not None and not isinstance(prefix_strategy, S3PrefixStrategyBase):
            raise TypeError(
                "prefix_strategy must be an S3PrefixStrategyBase, "
                f"got {type(prefix_strategy).__name__}"
            )
        uri = _paths.to_uri(path)  # a bad path fails before a client is made
        options: dict[str, Any] = {
            "single_file_per_rank": single_file_per_rank,
            "sync_files": False,
            "thread_count": thread_count,
            "per_thread_copy_ahead": per_thread_copy_ahead,
            "cache_staged_state_dict": cache_staged_state_dict,
            "overwrite": overwrite,
        }
        accepted = inspect.signature(FileSystemWriter.__init__).parameters
        check_torch_options(kwargs, accepted)
        options = {name: value for name, value in options.items() if name in accepted}
        super().__init__(uri, **options, **kwargs)
        self.fs: S3FileSystem = S3FileSystem(  # type: ignore[assignment]
            region,
            endpoint=endpoint,
            s3client_config=save_config(s3client_config, client),
            client=client,
        )
        self.path: str = uri
        self.single_file_per_rank = single_file_per_rank
        self.sync_files = False
        self.thread_count = thread_count
        self.overwrite = overwrite
        self.atomic_overwrite = atomic_overwrite
        self._old_files: set[str] = set()  # named by the .metadata this save replaces
        self._rank_prefixes: list[str] = []  # of the ranks this writer publishes for
        self.prefix_strategy = prefix_strategy or DefaultPrefixStrategy()
        self.rank: int | None = None
        self.use_collectives = True
        self.is_coordinator = True

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the client if this writer made it."""
        self.fs.close()

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new save, at ``checkpoint_id`` if given (checked: ``s3://`` only)."""
        if checkpoint_id:
            self.path = self.fs.init_path(checkpoint_id)
        self.save_id = str(uuid.uuid4())  # as torch >= 2.4 does (2.3 has no save_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Learn this rank's role (torch passes ``rank`` and ``use_collectives`` as keywords)."""
        self.is_coordinator = is_coordinator
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    @property
    def _rank_local(self) -> bool:
        return not self.use_collectives and self.rank is not None

    def _metadata_uri(self) -> str:
        name = f"__{self.rank}{METADATA}" if self._rank_local else METADATA
        return self.fs.concat_path(self.path, name)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Check for (with ``overwrite``: unpublish) an existing checkpoint; place rank-local files.

        Raises:
            FileExistsError: a checkpoint exists at the path and ``overwrite`` is False.
        """
        if self._rank_local or self.is_coordinator:
            metadata_uri = self._metadata_uri()
            if self.fs.exists(metadata_uri):
                if not self.overwrite:
                    raise FileExistsError(
                        f"Checkpoint already exists at {self.path} ({metadata_uri}) and "
                        "overwrite=False: nothing was written"
                    )
                log.info("overwriting the checkpoint at %s", self.path)
                if self.atomic_overwrite:
                    # Kept until the new .metadata replaces it; its files go after.
                    self._old_files = files_named_at(self.fs, metadata_uri)
                else:
                    # Unpublish first: until the new save completes, there is no
                    # checkpoint here rather than an old .metadata over new files.
                    self.fs.rm_file(metadata_uri)
        if self._rank_local:
            assert self.rank is not None
            placed = self._place(self.prefix_strategy(self.rank))
            self._rank_prefixes = [placed.prefix]
            plan = dataclasses.replace(plan, storage_data=placed)
        return plan

    def _place(self, prefix: str, token: str | None = None) -> StoragePrefix:
        if not self.atomic_overwrite:
            return StoragePrefix(prefix)
        return StoragePrefix(prefix, token or new_token())

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Give each rank's plan its key prefix (a rank-local plan keeps its own)."""
        placed = []
        token = new_token()  # one per save: every rank's files share it
        for index, plan in enumerate(plans):
            if plan.storage_data is None:
                prefix = self.prefix_strategy(_plan_rank(index, len(plans)))
                plan = dataclasses.replace(plan, storage_data=self._place(prefix, token))
            placed.append(plan)
        self._rank_prefixes = [plan.storage_data.prefix for plan in placed]
        return placed

    # -------------------------------------------------------------- writing
    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Upload this rank's files, ``thread_count`` at once; every upload is complete or aborted.

        Raises:
            S3CheckpointError: a file could not be written (rank, URI and cause);
                every other upload of this rank has been aborted.
        """
        prefix = plan.storage_data.prefix
        token = getattr(plan.storage_data, "token", "")
        if self.single_file_per_rank:
            groups = split_items(plan.items, self.thread_count)
        else:
            groups = [[item] for item in plan.items]
        jobs = []
        written: list[str] = []  # files complete so far (list.append is thread-safe)
        for number, items in enumerate(groups):
            relative = data_file_name(prefix, number, token)
            uri = self.fs.concat_path(self.path, relative)
            job = FileJob(self.fs, uri, relative, items, planner, written, self._transforms())
            jobs.append((uri, job))
        try:
            results = run_jobs(
                jobs, threads=self.thread_count, rank=self._error_rank(), verb="write"
            )
        except BaseException:
            self._remove(written)  # no .metadata will name them: tidy up
            raise
        future: Future[list[WriteResult]] = Future()
        future.set_result([result for file_results in results for result in file_results])
        return future

    def _transforms(self) -> Any:
        """torch's stream transforms of the ``_extensions`` given (None: torch has none)."""
        transforms = getattr(self, "transforms", None)
        return transforms if getattr(transforms, "extensions", None) else None

    def _remove(self, uris: Sequence[str]) -> None:
        """Delete the files of a failed save, to the end even through another Ctrl-C.

        The deletes run on a thread of their own; an interrupt of the wait for
        them is raised once they are done.
        """
        if not uris:
            return
        with ThreadGroup("s3torch-dcp-cleanup") as group:
            group.start(self._remove_now, uris)

    def _remove_now(self, uris: Sequence[str]) -> None:
        for uri in uris:
            try:
                self.fs.rm_file(uri)
            except Exception as error:
                log.warning("could not remove %s: %s", uri, error)

    def _error_rank(self) -> int:
        if self.rank is not None:
            return self.rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Publish the checkpoint: ``.metadata`` in one atomic upload, after every file is complete.

        Raises:
            S3CheckpointError: the metadata could not be written (no checkpoint
                is published; the data files it would have named are removed).
        """
        metadata.storage_data = {
            result.index: result.storage_data for rank_results in results for result in rank_results
        }
        version = getattr(_torch_fs, "CURRENT_DCP_VERSION", None)
        if version is not None:
            metadata.version = version
        if hasattr(metadata, "storage_meta"):
            metadata.storage_meta = self.storage_meta()
        data = pickle.dumps(metadata)
        uri = self._metadata_uri()
        bucket, key = _paths.split(uri)
        try:
            with self.fs.client.put_object(bucket, key) as writer:
                writer.write(data)
        except Exception as error:
            self._remove_unpublished(uri, metadata, data)
            raise S3CheckpointError(
                f"rank {self._error_rank()} failed to write {uri}: {type(error).__name__}: {error}",
                rank=self._error_rank(),
                uri=uri,
            ) from error
        log.debug("published %s (%d bytes)", uri, len(data))
        if self.atomic_overwrite:
            self._remove_replaced(metadata)

    def _remove_replaced(self, metadata: Metadata) -> None:
        """After an atomic overwrite is published: delete the files its ``.metadata`` does not name.

        Those of the checkpoint it replaced, and leftovers of killed saves in
        its rank directories. A failure here is logged: the checkpoint is
        published and loads; the next save removes what is left.
        """
        keep = {info.relative_path for info in metadata.storage_data.values()}
        try:
            stale = stale_files(self.fs, self.path, self._rank_prefixes, keep, self._old_files)
        except Exception as error:
            log.warning("could not list the replaced files under %s: %s", self.path, error)
            return
        log.debug("removing %d replaced files under %s", len(stale), self.path)
        self._remove(stale)
        self._old_files = set()

    def _remove_unpublished(self, metadata_uri: str, metadata: Metadata, data: bytes) -> None:
        """Delete the data files of a save whose ``.metadata`` could not be written.

        Unless a ``.metadata`` is there after all (a PUT the server took
        though the client saw it fail): then nothing is deleted.
        """
        try:
            if self.atomic_overwrite:  # the old .metadata may be there: is it ours?
                published = self._holds(metadata_uri, data)
            else:
                published = self.fs.exists(metadata_uri)
        except Exception as error:
            log.warning("could not tell whether %s exists: %s", metadata_uri, error)
            return
        if published:
            log.warning("%s exists although its upload failed: its files are kept", metadata_uri)
            return
        relative = sorted({info.relative_path for info in metadata.storage_data.values()})
        self._remove([self.fs.concat_path(self.path, name) for name in relative])

    def _holds(self, uri: str, data: bytes) -> bool:
        """Whether the object at ``uri`` is ``data`` (False if there is none)."""
        if not self.fs.exists(uri):
            return False
        return read_bytes(self.fs, uri) == data

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint location, ``s3://bucket/prefix``."""
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """Whether ``checkpoint_id`` is an ``s3://`` URI."""
        return S3FileSystem.validate_checkpoint_id(checkpoint_id)


def _plan_rank(index: int, plan_count: int) -> int:
    """The rank a global plan's ``index`` stands for.

    A save with ``no_dist=True`` inside a process group plans alone as "rank
    0" on every rank; the process's own rank keeps their files apart.
    """
    if plan_count == 1 and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return index
