"""Which objects a dataset holds: a prefix to list, a manifest to read, or a fixed list of URIs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from s3torch.client import ObjectInfo, S3Client, parse_s3_uri

from ._manifest import read_manifest, read_manifest_header

__all__ = [
    "MANIFEST_PAGE",
    "DatasetObject",
    "ManifestListing",
    "ObjectList",
    "PagedSource",
    "PrefixListing",
    "is_folder_marker",
]

log = logging.getLogger(__name__)

FIRST_PAGE_KEYS = 100
"""Keys in a prefix listing's first page."""

PAGE_KEYS = 1000
"""Keys in each later page."""

FAN_OUT_AFTER_PAGES = 10
"""Pages listed serially before the rest of a prefix is split into ranges.

A walk of this many pages is a few hundred milliseconds on S3; below that,
splitting saves little and its guessed ranges cost requests that come back
empty (a 1,110-key prefix took 15 requests instead of 3 when the cuts were
made after two pages while the dataset's GETs kept the reader busy)."""


class DatasetObject(NamedTuple):
    """One object of a dataset; ``info`` (size, ETag) when a listing provided it."""

    bucket: str
    key: str
    info: ObjectInfo | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_folder_marker(info: ObjectInfo) -> bool:
    """A zero-byte key ending in ``/``: how consoles show folders, not data."""
    return info.size == 0 and info.key.endswith("/")


@dataclass(frozen=True)
class PrefixListing:
    """Every object under ``s3://bucket/prefix``, recursively, in key order.

    Sizes and ETags come from the listing, so opening an object costs no HEAD.
    Folder markers are skipped. Called with a client, it lists lazily, page by
    page (the client fetches pages ahead), so the first objects are available
    after one page, and that page is a short one.
    """

    bucket: str
    prefix: str

    @classmethod
    def from_uri(cls, s3_uri: str) -> PrefixListing:
        """Parse ``s3://bucket/prefix`` (ValueError naming the URI if malformed)."""
        bucket, prefix = parse_s3_uri(s3_uri)
        return cls(bucket, prefix)

    def __call__(self, client: S3Client) -> Iterator[DatasetObject]:
        for page in self.pages(client):
            yield from page

    def pages(self, client: S3Client) -> Iterator[list[DatasetObject]]:
        """The objects, a listing page at a time.

        Listed with :meth:`S3Client.list_objects_parallel`: serially for the
        first :data:`FAN_OUT_AFTER_PAGES` pages, then, if more remain, by
        several walkers at once over ranges of the key space, still in key order.
        """
        log.debug("listing s3://%s/%s", self.bucket, self.prefix)
        # A small first page: the first objects start downloading sooner.
        # A generator stopped early (an epoch cut short) closes the listing:
        # the requests in flight are cancelled, not left to arrive.
        with client.list_objects_parallel(
            self.bucket,
            self.prefix,
            max_keys=PAGE_KEYS,
            first_page_keys=FIRST_PAGE_KEYS,
            fan_out_after=FAN_OUT_AFTER_PAGES,
        ) as listing:
            for page in listing:
                yield [
                    DatasetObject(info.bucket, info.key, info)
                    for info in page.objects
                    if not is_folder_marker(info)
                ]


MANIFEST_PAGE = 1000
"""Objects per page of a manifest (as many as a full listing page)."""


@dataclass(frozen=True)
class ManifestListing:
    """The objects a manifest names, in its (key) order, read from it: no LIST request.

    ``bucket`` is the bucket of the objects (the header's prefix's); ``etag``
    pins the version of the manifest read when the dataset was made, so
    every process and pass reads that same version (one replaced since
    raises ``S3PreconditionFailedError`` naming the manifest). The manifest
    is streamed, parsed a chunk at a time, whatever its length.
    """

    uri: str
    bucket: str
    etag: str | None = None

    @classmethod
    def open(cls, uri: str, client: S3Client) -> ManifestListing:
        """Read the header of the manifest at ``uri`` (one GET, cancelled after line 1).

        Raises:
            ValueError: a malformed URI.
            ManifestError: not a manifest (naming the URI and line 1).
            S3Exception: the GET failed (``S3NotFoundError``: no manifest there).
        """
        header, etag = read_manifest_header(uri, client)
        return cls(header.uri, header.bucket, etag)

    def __call__(self, client: S3Client) -> Iterator[DatasetObject]:
        for page in self.pages(client):
            yield from page

    def pages(self, client: S3Client) -> Iterator[list[DatasetObject]]:
        """The objects, :data:`MANIFEST_PAGE` at a time."""
        log.debug("reading the manifest %s", self.uri)
        _, infos = read_manifest(self.uri, client, etag=self.etag)
        try:
            objects = (DatasetObject(info.bucket, info.key, info) for info in infos)
            while page := list(islice(objects, MANIFEST_PAGE)):
                yield page
        finally:  # stopped early: the manifest's GET is cancelled now
            infos.close()


PagedSource = (PrefixListing, ManifestListing)
"""The sources that list page by page, whose listing DataLoader workers share."""


@dataclass(frozen=True)
class ObjectList:
    """A fixed list of objects, in the order given (their sizes are learnt when read)."""

    objects: tuple[tuple[str, str], ...]

    @classmethod
    def from_uris(cls, object_uris: str | Iterable[str]) -> ObjectList:
        """Parse one URI or many (ValueError naming the first malformed one)."""
        uris = [object_uris] if isinstance(object_uris, str) else list(object_uris)
        objects = []
        for uri in uris:
            bucket, key = parse_s3_uri(uri)
            if not key:
                raise ValueError(f"Invalid object URI {uri!r}: it names a bucket, not an object")
            objects.append((bucket, key))
        return cls(tuple(objects))

    def __call__(self, client: S3Client) -> Iterator[DatasetObject]:
        for bucket, key in self.objects:
            yield DatasetObject(bucket, key)
