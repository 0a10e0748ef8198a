"""Tell a missing bucket from a missing key when a HEAD answers 404.

A HEAD response has no body, so a 404 to ``HeadObject`` carries no error
code: S3 says "not found" alike for a missing key and a missing bucket. A GET
says which (``NoSuchKey``/``NoSuchBucket``), a HEAD does not. On such a 404,
one HeadBucket (a single small request, only on this failure path) settles
it: if it too answers 404, the bucket is missing and the error says so, with
``code`` ``"NoSuchBucket"``. Any other answer, or a failure of the HeadBucket
itself, leaves the HEAD's own error as it was.
"""

from __future__ import annotations

from ._crt_errors import error_for_status
from ._transport import CrtClient, Response
from .errors import S3NotFoundError

__all__ = ["head_object"]

NO_SUCH_BUCKET = "NoSuchBucket"


def head_object(
    crt: CrtClient, bucket: str, key: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """``HeadObject s3://bucket/key``; a 404 of a missing bucket is raised as one.

    Raises:
        S3NotFoundError: ``code`` ``"NoSuchBucket"`` (the message names the
            bucket as missing) or the HEAD's own 404 (a missing key).
    """
    try:
        return crt.call("HeadObject", "HEAD", bucket, key, headers=headers or [])
    except S3NotFoundError as error:
        if error.code == NO_SUCH_BUCKET or not _bucket_is_missing(crt, bucket):
            raise
        missing = error_for_status(
            404,
            operation="HeadObject",
            bucket=bucket,
            key=key,
            code=NO_SUCH_BUCKET,
            request_id=error.request_id,
        )
        raise missing from error


def _bucket_is_missing(crt: CrtClient, bucket: str) -> bool:
    """Whether a HeadBucket answers 404 (False for any other answer or failure)."""
    try:
        crt.call("HeadBucket", "HEAD", bucket)
    except S3NotFoundError:
        return True
    except Exception:  # refused (403), throttled, unreachable: we cannot tell
        return False
    return False
