"""Listing: ListObjectsV2 pages, fetched ahead of the reader.

Continuation tokens make a listing sequential, so the only way to go faster is
never to leave the server idle: as soon as a page arrives, its token is picked
out of the raw response and the next page is requested, while the reader is
still parsing and using the one before. At most two pages run ahead.

A listing can be left early: ``close()`` (or leaving a ``with`` block) cancels
the pages in flight and requests no more.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from types import TracebackType

from . import _xml
from ._transport import CrtClient, Response
from ._watchdog import Tracked
from .models import ListObjectsPage

__all__ = ["ObjectListing"]

PAGES_AHEAD = 2
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>")
_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>", re.IGNORECASE)


def next_token(body: bytes) -> str | None:
    """The continuation token of a ListObjectsV2 page, or None on the last page."""
    if not _TRUNCATED.search(body):
        return None
    match = _TOKEN.search(body)
    if match is None:
        return None
    # Decode it as XML (entities and character references alike, e.g. &#39;).
    return ET.fromstring(b"<t>" + match.group(1) + b"</t>").text


class ObjectListing(Iterator[ListObjectsPage]):
    """The pages of one listing, in key order (made by :meth:`S3Client.list_objects`).

    Iterate it for :class:`ListObjectsPage` objects. To stop before the end,
    call :meth:`close` or use it as a context manager: the pages requested
    ahead are cancelled and no further request is made.
    """

    def __init__(
        self,
        crt: CrtClient,
        bucket: str,
        prefix: str,
        delimiter: str,
        max_keys: int,
        first_page_keys: int | None = None,
    ) -> None:
        self._crt = crt
        self._bucket = bucket
        self._first_page_keys = first_page_keys
        self._query = {"list-type": "2", "encoding-type": "url", "max-keys": str(max_keys)}
        if prefix:
            self._query["prefix"] = prefix
        if delimiter:
            self._query["delimiter"] = delimiter
        self._lock = threading.RLock()
        self._requested: deque[Future[Response]] = deque()
        # The native requests of pages still in flight, to cancel them on close().
        # Each is dropped when its page finishes: the request holds our callbacks,
        # a cycle the garbage collector cannot see.
        self._in_flight: dict[Future[Response], Tracked] = {}
        self._held_token: str | None = None  # a next page not requested yet (too far ahead)
        self._closed = False
        self._error: BaseException | None = None  # the next page could not be requested
        with self._lock:
            self._request(None)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _request(self, token: str | None) -> None:
        """Request the page after ``token`` (the first if None). Call with the lock held."""
        query = dict(self._query)
        if token:
            query["continuation-token"] = token
        elif self._first_page_keys is not None:
            query["max-keys"] = str(self._first_page_keys)
        request, future = self._crt.start(
            "ListObjectsV2",
            "GET",
            self._bucket,
            query=query,
            on_response=self._arrived,
            on_done=self._finished,
        )
        self._requested.append(future)
        if not future.done():  # else _finished already ran: do not hold the request
            self._in_flight[future] = request

    def _arrived(self, response: Response) -> None:
        """On a CRT thread, before the page's future resolves: ask for the next page.

        Doing it before the future resolves means a reader that finds no page
        requested really is at the end.
        """
        token = next_token(response.body)
        if token is None:
            return
        with self._lock:
            if self._closed:
                return
            if len(self._requested) < PAGES_AHEAD:
                try:
                    self._request(token)
                except Exception as error:  # never a silently short listing
                    self._error = error
            else:
                self._held_token = token

    def _finished(self, future: Future[Response]) -> None:
        with self._lock:
            self._in_flight.pop(future, None)

    def __next__(self) -> ListObjectsPage:
        if self._closed:
            raise StopIteration
        self._crt.require_this_process(f"the listing of s3://{self._bucket}")
        with self._lock:
            if not self._requested:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            future = self._requested[0]
        try:
            response = future.result()  # raises the S3Exception of a failed page
        except Exception:
            if self._closed:  # cancelled by close() in another thread
                raise StopIteration from None
            raise
        page, _ = _xml.parse_list_objects(response.body, self._bucket)
        with self._lock:
            if self._closed:  # closed by another thread meanwhile
                raise StopIteration
            self._requested.popleft()
            if self._held_token is not None:
                token, self._held_token = self._held_token, None
                self._request(token)
        return page

    def __iter__(self) -> ObjectListing:
        return self

    def close(self) -> None:
        """Stop listing: cancel the pages requested ahead and request no more.

        Iterating a closed listing ends at once (``StopIteration``). Closing
        twice is harmless; so is closing, in a forked child, a listing the
        parent opened (the parent's requests are left alone).
        """
        if self._closed:
            return
        if not self._crt.in_this_process:
            self._closed = True  # the parent's lock and requests are not ours to touch
            return
        with self._lock:
            self._closed = True
            self._held_token = None
            self._requested.clear()
            in_flight = list(self._in_flight.values())
        for request in in_flight:  # outside the lock: cancelling may run callbacks
            request.cancel()

    def __enter__(self) -> ObjectListing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
