"""Whether a download's bytes are what the server stored, and what was checked.

S3 returns an object's checksum only with a whole-object response (a HEAD or
a GET without ``Range``, with ``x-amz-checksum-mode: ENABLED``), never for a
byte range. So:

- a whole object is validated against the checksum the server stored, whatever
  its algorithm (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256) and whoever wrote
  it: a ``FULL_OBJECT`` checksum from all the bytes, a ``COMPOSITE`` one
  (``<base64>-<N>``, a multipart upload) from its parts, whose sizes
  GetObjectAttributes reports;
- a byte range is not validated; nor is an object whose server stored no
  checksum (said in the note).

Validation fails closed: when the request asking the stored checksum fails
(after the client's retries), the download raises rather than hand out bytes it
cannot check (:func:`checksum_unavailable`). Only a server that answers that it
will not tell (a ``COMPOSITE`` checksum whose part sizes GetObjectAttributes
refuses, say with 501 NotImplemented) lets bytes through unvalidated, and the
warning saying so is logged when the first of them is handed out, never before
a read that fails anyway.

:class:`ResponseCheck` checks one whole-object response. :class:`WindowedCheck`
checks a download made of ranged windows: a full-object CRC is summed per
window in parallel on the CRT threads and combined in order; anything else
(a SHA, a composite checksum, or windows that started before the algorithm
was known and were summed with another one) is computed over the bytes in the
order the reader takes them. Neither has a lock: the owning download guards
it (see its lock order); a window's parallel sum is written only by the CRT
thread delivering that window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ._checksums import (
    ALGORITHMS,
    DIGESTS,
    BytesLike,
    CompositeDigest,
    Crc,
    Digest,
    digest_of,
    encode,
    mismatch_error,
    stored_checksum,
)
from ._crt_errors import chain
from ._transport import Headers
from ._xml import NO_OBJECT_PARTS
from .errors import S3Exception
from .models import ObjectChecksum

log = logging.getLogger(__name__)

NOT_ENABLED = "not validated: checksum validation is off (S3ClientConfig.checksum_algorithm=None)"
A_RANGE = "not validated: a byte range (S3 returns checksums for whole objects only)"
NO_CHECKSUM = "not validated: the server stored no checksum for this object"
NOT_FINISHED = "not validated (yet): the stream was not read to its end"
NOTHING_READ = "not validated: an empty range or object, nothing was fetched"


@dataclass(frozen=True)
class Verdict:
    """What a finished check found: ``validated`` against ``checksum``, and why not if not."""

    validated: bool
    checksum: ObjectChecksum | None
    note: str


def checksum_unavailable(
    error: BaseException, *, asked: str, bucket: str, key: str
) -> BaseException:
    """The error a download raises when the request ``asked`` for the stored checksum failed.

    Of the class of the request's own error (an :class:`S3TransportError` stays
    one), about the download, chained to that error.
    """
    if not isinstance(error, S3Exception):
        return error
    failure = type(error)(
        f"the checksum the server stored could not be fetched ({asked} failed: {error}), "
        "so the bytes cannot be validated and none are returned; read again, or set "
        "S3ClientConfig(checksum_algorithm=None) to read without validation",
        operation="GetObject",
        bucket=bucket,
        key=key,
        status=error.status,
        code=error.code,
        request_id=error.request_id,
    )
    return chain(failure, error)


def refuses_to_tell(error: BaseException | None) -> bool:
    """Whether a side request's failure is the server declining (not a fault on the way).

    An HTTP 4xx answer other than 404 (the object is gone) and 412 (it
    changed): no permission for GetObjectAttributes, or not implemented
    (400/403/405/501); or a well-formed answer without the parts (moto keeps
    none). Transport errors, timeouts, 5xx after every retry and answers that
    do not parse are faults: validation fails closed on them.
    """
    if not isinstance(error, S3Exception):
        return False
    if error.code == NO_OBJECT_PARTS:
        return True
    if error.status is None:
        return False
    return error.status == 501 or (400 <= error.status < 500 and error.status not in (404, 412))


def _validated(checksum: ObjectChecksum) -> str:
    return f"validated: {checksum.type} {checksum.algorithm} {checksum.value}"


def _composite_without_parts(checksum: ObjectChecksum) -> str:
    return (
        f"not validated: a {checksum.algorithm} COMPOSITE checksum ({checksum.value}) "
        "without its part count cannot be recomputed"
    )


def check_response(headers: Headers, chunks: list[bytes], *, bucket: str, key: str) -> Verdict:
    """Check a whole-object response's body against the checksum in its headers.

    Raises :class:`S3ChecksumMismatchError` if they differ. A composite
    checksum of one part is recomputed; of several parts it is not (one
    response does not say where its parts end).
    """
    checksum = stored_checksum(headers)
    if checksum is None:
        return Verdict(False, None, NO_CHECKSUM)
    if checksum.type == "FULL_OBJECT":
        actual = digest_of(checksum.algorithm, chunks)
    elif checksum.parts == 1:
        composite = CompositeDigest(checksum.algorithm, [sum(len(c) for c in chunks)])
        for chunk in chunks:
            composite.update(chunk)
        actual = composite.value()
    else:
        return Verdict(
            False,
            checksum,
            f"not validated: a {checksum.algorithm} COMPOSITE checksum of {checksum.parts} "
            "parts, and the part sizes were not asked for (an object read in one request)",
        )
    if actual != checksum.value:
        raise mismatch_error(checksum.algorithm, checksum.value, actual, bucket=bucket, key=key)
    return Verdict(True, checksum, _validated(checksum))


class WindowedCheck:
    """The integrity check of one download made of ranged windows.

    Lifecycle: the download asks the server's checksum (:meth:`learn`, and for
    a composite checksum :meth:`learn_parts`) or gives up (:meth:`give_up`);
    until then (``ready`` is False) no byte may be handed out. Each window
    picks, at its first byte, the CRC it is summed with in parallel
    (:meth:`parallel_crc`); each chunk handed out passes :meth:`deliver`, each
    consumed window :meth:`retire`, and the last byte :meth:`finish`.
    """

    def __init__(self, *, bucket: str, key: str, enabled: bool, guess: str | None) -> None:
        self.bucket = bucket
        self.key = key
        self.active = enabled
        self.ready = not enabled
        self.checksum: ObjectChecksum | None = None
        self.validated = False
        self.note = NOT_FINISHED if enabled else NOT_ENABLED
        self.needs_parts = False
        # Set when the stored checksum could not be fetched: raised instead of
        # the first byte (a failure of the download itself goes first).
        self.error: BaseException | None = None
        self._warning: str | None = None  # logged when the first byte goes out
        self._guess = ALGORITHMS[guess] if guess else None
        self._parallel: Crc | None = None  # a FULL_OBJECT CRC: windows summed in parallel
        self._combined = 0
        self._sequential: Digest | CompositeDigest | None = None  # bytes in reader order
        self._object_size = 0

    # ----------------------------------------------------------------- the plan
    def not_applicable(self, note: str) -> None:
        """This download is not a whole object (or nothing will be checked): say why."""
        self.active = False
        self.ready = True
        self.note = note

    def learn(self, headers: Headers, object_size: int) -> None:
        """Take the checksum the server stored (from a HEAD with checksum mode)."""
        if not self.active:
            return
        self._object_size = object_size
        checksum = self.checksum = stored_checksum(headers)
        if checksum is None:
            self.not_applicable(NO_CHECKSUM)
        elif checksum.type == "FULL_OBJECT":
            if checksum.algorithm in ALGORITHMS:
                self._parallel = ALGORITHMS[checksum.algorithm]
            else:
                self._sequential = DIGESTS[checksum.algorithm]()
            self.ready = True
        elif checksum.parts is None:
            self.not_applicable(_composite_without_parts(checksum))
            self.checksum = checksum
        elif checksum.parts == 1:
            self.learn_parts([object_size])
        else:
            self.needs_parts = True

    def learn_parts(self, sizes: list[int]) -> None:
        """Take the sizes of a composite-checksum object's parts."""
        assert self.checksum is not None
        self.needs_parts = False
        if len(sizes) != self.checksum.parts or sum(sizes) != self._object_size:
            self.give_up(
                f"the server listed {len(sizes)} parts of {sum(sizes)} bytes for a "
                f"{self.checksum.parts}-part object of {self._object_size} bytes"
            )
            return
        self._sequential = CompositeDigest(self.checksum.algorithm, sizes)
        self.ready = True

    def give_up(self, reason: str) -> None:
        """The server will not tell what to check against: bytes go out unvalidated.

        The warning is logged when the first byte is handed out (:meth:`deliver`).
        """
        checksum = self.checksum
        self.not_applicable(f"not validated: {reason}")
        self.checksum = checksum
        self._warning = reason

    def unavailable(self, error: BaseException) -> None:
        """The stored checksum could not be fetched: ``error`` is raised instead of any byte."""
        checksum = self.checksum
        self.not_applicable("not validated: the stored checksum could not be fetched")
        self.checksum = checksum
        self.error = error

    # ------------------------------------------------------------- the bytes
    def parallel_crc(self) -> Crc | None:
        """The CRC a window starting now is summed with on its CRT thread (None: not summed)."""
        if not self.active:
            return None
        return self._parallel if self.ready else self._guess

    def deliver(self, chunk: BytesLike, summed_with: Crc | None, window_crc: int) -> int:
        """Account for a chunk handed to the reader; return the window's reader-side CRC."""
        if self._warning is not None:
            log.warning(
                "s3://%s/%s is read without validation: %s", self.bucket, self.key, self._warning
            )
            self._warning = None
        if not self.active:
            return window_crc
        if self._sequential is not None:
            self._sequential.update(chunk)
        elif self._parallel is not None and summed_with is not self._parallel:
            return self._parallel.update(chunk, window_crc)
        return window_crc

    def retire(self, summed_with: Crc | None, parallel: int, reader_side: int, length: int) -> None:
        """Fold a consumed window's CRC into the object's."""
        crc = self._parallel
        if self.active and crc is not None:
            value = parallel if summed_with is crc else reader_side
            self._combined = crc.combine(self._combined, value, length)

    def finish(self) -> None:
        """After the last byte: compare (raises :class:`S3ChecksumMismatchError`)."""
        if not self.active or self.checksum is None or self.validated:
            return
        checksum = self.checksum
        if self._parallel is not None:
            actual = self._parallel.encode(self._combined)
        elif isinstance(self._sequential, CompositeDigest):
            actual = self._sequential.value()
        else:
            assert self._sequential is not None
            actual = encode(self._sequential.digest())
        if actual != checksum.value:
            self.active = False
            self.note = f"failed: the bytes have {checksum.algorithm} {actual}"
            raise mismatch_error(
                checksum.algorithm, checksum.value, actual, bucket=self.bucket, key=self.key
            )
        self.validated = True
        self.note = _validated(checksum)

    def verdict(self) -> Verdict:
        return Verdict(self.validated, self.checksum, self.note)
