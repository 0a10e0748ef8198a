"""Ask the server which checksum it stored for an object, and the sizes of its parts.

S3 returns checksums only with whole-object responses: a download made of
ranged GETs asks a HEAD (with ``x-amz-checksum-mode: ENABLED``) for it. A
``COMPOSITE`` checksum covers parts, so its parts' sizes come from
GetObjectAttributes (``ObjectParts``). Both run beside the download, and call
back on a CRT thread with the answer or the error.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from ._crt_errors import check_etag
from ._transport import CrtClient, Response
from ._xml import parse_object_parts

__all__ = ["ask_part_sizes", "ask_stored_checksum"]

_PAGE = 1000  # the most parts GetObjectAttributes returns at once


def ask_stored_checksum(
    crt: CrtClient,
    bucket: str,
    key: str,
    on_done: Callable[[Response | None, BaseException | None], None],
) -> None:
    """HEAD the object with checksum mode; ``on_done(response, error)``."""

    def done(future: Future[Response]) -> None:
        error = future.exception()
        on_done(None if error is not None else future.result(), error)

    crt.start(
        "HeadObject",
        "HEAD",
        bucket,
        key,
        headers=[("x-amz-checksum-mode", "ENABLED")],
        on_done=done,
    )


def ask_part_sizes(
    crt: CrtClient,
    bucket: str,
    key: str,
    etag: str | None,
    on_done: Callable[[list[int] | None, BaseException | None], None],
) -> None:
    """The sizes of the object's parts, in order; ``on_done(sizes, error)``."""
    sizes: list[int] = []

    def page(marker: int) -> None:
        headers = [
            ("x-amz-object-attributes", "ETag,ObjectParts"),
            ("x-amz-max-parts", str(_PAGE)),
        ]
        if marker:
            headers.append(("x-amz-part-number-marker", str(marker)))
        if etag is not None:
            headers.append(("If-Match", etag))
        crt.start(
            "GetObjectAttributes",
            "GET",
            bucket,
            key,
            query={"attributes": ""},
            headers=headers,
            on_done=answered,
        )

    def answered(future: Future[Response]) -> None:
        try:
            parts, following, answered_etag = parse_object_parts(future.result().body, bucket, key)
            # Part sizes of another version would fail the check misleadingly.
            check_etag(etag, answered_etag, bucket=bucket, key=key, operation="GetObjectAttributes")
            sizes.extend(parts)
            if following is not None:
                page(following)
                return
        except BaseException as error:  # the download reports it
            on_done(None, error)
            return
        on_done(sizes, None)

    page(0)
