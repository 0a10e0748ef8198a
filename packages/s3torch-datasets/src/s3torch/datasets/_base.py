"""What both dataset kinds share: where the objects are, how to open and transform them."""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch.utils.data

from s3torch.client import (
    S3Client,
    S3ClientConfig,
    S3Exception,
    S3PreconditionFailedError,
    check_shared_client,
    require_int,
)
from s3torch.readers import S3Reader, S3ReaderConstructor, S3ReaderConstructorProtocol

from ._job_listing import JOB_GENERATION, in_group, in_job, list_for_job
from ._manifest import ManifestMismatchError
from ._shared_listing import Keep, SharedListing, kept
from ._source import DatasetObject, ManifestListing, PagedSource, PrefixListing

__all__ = [
    "DEFAULT_PREFETCH",
    "DatasetSource",
    "S3DatasetBase",
    "changed_since",
    "identity",
    "name_object_in",
]

log = logging.getLogger(__name__)

DEFAULT_PREFETCH = 16
"""Objects downloaded ahead of the one being transformed, within one process."""

DatasetSource = Callable[[S3Client], Iterable[DatasetObject]]
"""Lists a dataset's objects with a client (must pickle, for spawned workers)."""


def identity(reader: S3Reader) -> S3Reader:
    """The default transform: the item is the reader itself."""
    return reader


def name_object_in(error: BaseException, uri: str) -> None:
    """Add to ``error`` which object it was raised for, keeping its type and arguments.

    On Python 3.11+ an exception note (shown in its traceback, and in the
    message a DataLoader worker sends back); on 3.10 ``__notes__`` alone,
    which tracebacks do not show there.
    """
    note = f"while transforming {uri}"
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(error, "__notes__", None)
        error.__notes__ = [*(notes or ()), note]  # type: ignore[attr-defined]


def changed_since(error: S3PreconditionFailedError, manifest: str) -> ManifestMismatchError:
    """The error for an object that ``error`` found changed since ``manifest`` was written."""
    return ManifestMismatchError(
        f"s3://{error.bucket}/{error.key} changed since the manifest {manifest} was written "
        f"(write the manifest again): {error.reason}",
        manifest=manifest,
        operation=error.operation,
        bucket=error.bucket,
        key=error.key,
        status=error.status,
        code=error.code,
        request_id=error.request_id,
    )


class S3DatasetBase:
    """Settings, the per-process client, and reading objects with prefetch.

    A dataset pickles as its settings and its object source only: no client
    (each process makes its own on first use) and no listing. The DataLoader
    workers of a dataset over a prefix share one listing (see
    :mod:`._shared_listing`): the first to need it lists, the others read.
    """

    def __init__(
        self,
        region: str,
        get_dataset_objects: DatasetSource,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        client: S3Client | None = None,
    ) -> None:
        if not isinstance(region, str) or not region:
            raise ValueError(f"region must be a non-empty string, got {region!r}")
        if not callable(get_dataset_objects):
            raise TypeError(f"get_dataset_objects must be callable, got {get_dataset_objects!r}")
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {transform!r}")
        require_int("prefetch", prefetch)
        self._region = region
        self._endpoint = endpoint
        self._get_dataset_objects = get_dataset_objects
        self._transform = transform
        self._config = s3client_config
        self._reader_constructor = reader_constructor or S3ReaderConstructor.default()
        self._prefetch = prefetch
        check_shared_client(
            client, region=region, endpoint=endpoint, s3client_config=s3client_config
        )
        # A client given is shared (with other datasets, say) and pickles with
        # the dataset (its arguments only); one made here is this process's own.
        self._given_client = client
        self._client: S3Client | None = client
        self._shared_listing = (
            SharedListing.for_dataset(self, get_dataset_objects.bucket)
            if isinstance(get_dataset_objects, PagedSource) and SharedListing.available()
            else None
        )
        self._job_listings = 0  # collective listings this process took part in
        self._job_file = False  # whether this rank's processes read the job's listing file

    @staticmethod
    def _open_manifest(
        s3_uri: str,
        region: str,
        endpoint: str | None,
        s3client_config: S3ClientConfig | None,
        client: S3Client | None,
    ) -> tuple[ManifestListing, S3Client]:
        """The source of the manifest at ``s3_uri`` (its header read) and the client that read it.

        With no ``client`` given, a new one, for the dataset to keep (see
        :meth:`_keep_client`), so this process makes no second client.
        """
        if not isinstance(region, str) or not region:
            raise ValueError(f"region must be a non-empty string, got {region!r}")
        check_shared_client(
            client, region=region, endpoint=endpoint, s3client_config=s3client_config
        )
        reader = client or S3Client(region, endpoint=endpoint, s3client_config=s3client_config)
        try:
            return ManifestListing.open(s3_uri, reader), reader
        except BaseException:
            if client is None:
                reader.close()
            raise

    def _keep_client(self, client: S3Client) -> None:
        """Use ``client`` in this process (one made for the dataset: it never pickles)."""
        if self._client is None:
            self._client = client

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint(self) -> str | None:
        """The endpoint given, or the given client's; None means AWS's for the region."""
        return self._given_client.endpoint if self._given_client is not None else self._endpoint

    @property
    def client(self) -> S3Client:
        """The client this dataset reads with in this process: the one given, or its own.

        A dataset never closes a client it was given. One it made itself is
        made on first use in each process and never pickled.
        """
        return self._get_client()

    @property
    def prefetch(self) -> int:
        """Objects downloaded ahead of the one being transformed."""
        return self._prefetch

    @property
    def reader_constructor(self) -> S3ReaderConstructorProtocol:
        return self._reader_constructor

    def _get_client(self) -> S3Client:
        # One per dataset object and process: a client stays usable after a
        # fork (the child gets its own transfers), and never travels in a pickle.
        if self._client is None:
            self._client = S3Client(
                self._region, endpoint=self._endpoint, s3client_config=self._config
            )
        return self._client

    def _list(self, keep: Keep | None = None, generation: str = "0") -> Iterator[DatasetObject]:
        """The dataset's objects that ``keep`` keeps (by position), listed now.

        In a DataLoader worker, from the listing ``generation`` its sibling
        workers share (see :mod:`._shared_listing`); elsewhere, listed directly.
        """
        source, client = self._get_dataset_objects, self._get_client()
        shared = self._shared_listing
        if shared is not None and isinstance(source, PagedSource):
            if self._job_file:  # the job's listing, received at the last collective point
                return shared.objects(lambda: source.pages(client), JOB_GENERATION, keep)
            if in_group() and isinstance(source, PrefixListing):
                log.debug(
                    "%r: no listing shared by the job's ranks (no collective point reached on "
                    "every rank yet, see docs/datasets.md): this rank lists for itself",
                    self,
                )
            if self._listing_is_shared():
                return shared.objects(lambda: source.pages(client), generation, keep)
        return kept(source(client), keep)

    def _list_for_job(self) -> None:
        """A collective point: with a process group of several ranks, list once for the job.

        Call it only where every rank's main process passes, the same number
        of times (see :mod:`._job_listing`). Does nothing for a dataset of
        URIs, without a process group, or in a DataLoader worker.
        """
        source, shared = self._get_dataset_objects, self._shared_listing
        if shared is None or not isinstance(source, PrefixListing) or not in_job():
            return
        self._job_listings += 1
        self._job_file = False
        self._job_file = list_for_job(source, self._get_client, shared)

    def _listing_is_shared(self) -> bool:
        """Whether :meth:`_list` reads the listing the DataLoader workers share."""
        return self._shared_listing is not None and torch.utils.data.get_worker_info() is not None

    def _open(self, obj: DatasetObject) -> S3Reader:
        return self._reader_constructor(self._get_client(), obj.bucket, obj.key, obj.info)

    def _apply(self, reader: S3Reader) -> Any:
        try:
            return self._transform(reader)
        except S3PreconditionFailedError as error:
            source = self._get_dataset_objects
            if isinstance(source, ManifestListing) and not isinstance(error, ManifestMismatchError):
                raise changed_since(error, source.uri) from error
            raise
        except S3Exception:
            raise  # already names the bucket and key
        except Exception as error:
            # The user's own exception, of its own type (an `except ValueError`
            # still catches it), told which object it was raised for.
            name_object_in(error, reader.uri)
            raise

    def _read_all(self, objects: Iterable[DatasetObject]) -> Iterator[Any]:
        """``transform(reader)`` of each object, in order, the next ``prefetch`` downloading."""
        ahead: deque[S3Reader] = deque()
        pending = iter(objects)
        try:
            while True:
                while len(ahead) <= self._prefetch:
                    obj = next(pending, None)
                    if obj is None:
                        break
                    reader = self._open(obj)
                    reader.prefetch()
                    ahead.append(reader)
                if not ahead:
                    return
                yield self._apply(ahead.popleft())
        finally:  # stopped early: cancel what was fetched ahead
            for unread in ahead:
                unread.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = self._given_client  # a given client pickles as its arguments
        return state

    def _describe(self) -> str:
        return (
            f"region={self._region!r}, endpoint={self._endpoint!r}, "
            f"source={self._get_dataset_objects!r}, "
            f"reader={S3ReaderConstructor.get_reader_type_string(self._reader_constructor)}"
        )
