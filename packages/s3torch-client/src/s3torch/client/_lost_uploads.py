"""The multipart uploads a writer's retried CreateMultipartUpload made and lost track of.

When the answer to CreateMultipartUpload is lost after the server created the
upload (a reset, a timeout), the retry creates another one; the first is known
to nobody and stays open, billed, until a lifecycle rule removes it. S3 says
nothing about who made an upload (every writer of one identity is the same
initiator), so a writer tells its own lost uploads apart by when they appeared:

1. just before its Create, it lists the key's open uploads (``before``);
2. right after the Create is answered (or has failed for good), it lists them
   again (``after``);
3. the uploads in ``after`` that are neither in ``before`` nor its own were
   created while its Create was in flight: by its own lost attempts, and it
   aborts them.

Another writer's upload of the same key is touched only if it was created in
that same window (between the two listings, normally a few round trips):
writers racing to write one key at the same moment, of whom S3 keeps only the
last to complete anyway. The other writer then fails loudly (NoSuchUpload on
its next part or at completion), never silently. An upload that existed
before, or starts after, is never aborted. With ``max_attempts=1`` nothing is
retried, so nothing is listed.

Listing needs ``s3:ListBucketMultipartUploads``; without it (or if the first
listing fails) the writer goes on and only logs, at DEBUG, that it cannot look.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from ._transport import CrtClient, Response
from ._xml import parse_key_uploads

__all__ = ["LostUploads"]

log = logging.getLogger(__name__)

_PAGES = 10  # 10,000 open uploads of one key: past that, something else is wrong
_WAIT_SECONDS = 120.0  # the longest close() waits for the aborts (each request is bounded too)


def list_key_uploads(
    crt: CrtClient,
    bucket: str,
    key: str,
    on_done: Callable[[set[str] | None, BaseException | None], None],
) -> None:
    """The ids of the open multipart uploads of exactly ``key``; ``on_done(ids, error)``."""
    ids: set[str] = set()
    pages = 0

    def page(marker: tuple[str, str] | None) -> None:
        nonlocal pages
        pages += 1
        query = {"uploads": "", "prefix": key, "encoding-type": "url"}
        if marker is not None:
            query["key-marker"], query["upload-id-marker"] = marker
        crt.start("ListMultipartUploads", "GET", bucket, query=query, on_done=answered)

    def answered(future: Future[Response]) -> None:
        try:
            found, following = parse_key_uploads(future.result().body, bucket, key)
            ids.update(found)
            if following is not None and pages < _PAGES:
                page(following)
                return
        except BaseException as error:  # the writer logs it
            on_done(None, error)
            return
        on_done(ids, None)

    page(None)


class LostUploads:
    """Finds and aborts the uploads one writer's Create made and lost (see the module)."""

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.enabled = crt.config.max_attempts > 1  # without retries, nothing is lost
        self._before: set[str] | None = None
        self._settled = threading.Event()
        self._settled.set()  # nothing to wait for until a cleanup starts
        self._lock = threading.Lock()
        self._pending = 0

    def before_create(self) -> None:
        """List the key's open uploads, just before the Create (blocks for the answer)."""
        if not self.enabled:
            return
        answer: Future[set[str] | None] = Future()
        list_key_uploads(
            self.crt, self.bucket, self.key, lambda ids, error: _resolve(answer, ids, error)
        )
        try:
            self._before = answer.result()
        except Exception as error:
            log.debug(
                "cannot list the open uploads of s3://%s/%s (%s): uploads lost by a retried "
                "CreateMultipartUpload will not be found",
                self.bucket,
                self.key,
                error,
            )

    def after_create(self, own: str | None, *, wait: bool) -> None:
        """List again and abort the uploads that appeared, except ``own``.

        With ``wait`` (the Create failed: the writer is about to raise), return
        once they are aborted; otherwise in the background (:meth:`wait`).
        """
        before = self._before
        self._before = None
        if before is None:
            return
        self._settled.clear()

        def listed(ids: set[str] | None, error: BaseException | None) -> None:
            if ids is None:
                log.warning(
                    "could not list the open uploads of s3://%s/%s after its "
                    "CreateMultipartUpload (%s): an upload made by a lost answer may stay open",
                    self.bucket,
                    self.key,
                    error,
                )
                self._settled.set()
                return
            lost = sorted(ids - before - {own})
            with self._lock:
                self._pending = len(lost)
            if not lost:
                self._settled.set()
            for upload_id in lost:
                self._abort(upload_id)

        list_key_uploads(self.crt, self.bucket, self.key, listed)
        if wait:
            self.wait()

    def _abort(self, upload_id: str) -> None:
        def aborted(future: Future[Response]) -> None:
            error = future.exception()
            if error is None:
                log.debug(
                    "AbortMultipartUpload s3://%s/%s: upload id %s, made by a lost "
                    "CreateMultipartUpload answer, aborted",
                    self.bucket,
                    self.key,
                    upload_id,
                )
            else:
                log.warning(
                    "could not abort upload id %s of s3://%s/%s, made by a lost "
                    "CreateMultipartUpload answer: %s",
                    upload_id,
                    self.bucket,
                    self.key,
                    error,
                )
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._settled.set()

        try:
            self.crt.start(
                "AbortMultipartUpload",
                "DELETE",
                self.bucket,
                self.key,
                query={"uploadId": upload_id},
                on_done=aborted,
            )
        except Exception as error:  # the CRT refused to start it
            failed: Future[Response] = Future()
            failed.set_exception(error)
            aborted(failed)

    def wait(self) -> None:
        """Wait until the lost uploads found so far are aborted (or could not be)."""
        if not self._settled.wait(_WAIT_SECONDS):
            log.warning(
                "the uploads of s3://%s/%s lost by a retried CreateMultipartUpload were not "
                "all aborted within %.0f s",
                self.bucket,
                self.key,
                _WAIT_SECONDS,
            )


def _resolve(
    future: Future[set[str] | None], ids: set[str] | None, error: BaseException | None
) -> None:
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(ids)
