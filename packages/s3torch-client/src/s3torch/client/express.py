"""S3 Express One Zone directory buckets: their names, and how requests to them differ.

A directory bucket is named ``<base>--<zone-id>--x-s3`` (for example
``my-data--usw2-az1--x-s3``); the name alone tells a client to treat it as
one, as the AWS SDKs' endpoint rules do. With
:attr:`S3ClientConfig.enable_s3express` on (the default), a request to such
a bucket:

- goes to the bucket's zonal endpoint,
  ``https://<bucket>.s3express-<zone-id>.<region>.amazonaws.com`` (with a
  custom endpoint: ``<bucket>.<endpoint host>``, or path style when the
  endpoint is an IP address or ``localhost``); directory buckets take no
  path-style requests, so ``force_path_style`` does not apply to them;
- is signed with session credentials (awscrt's ``V4_S3EXPRESS`` signing,
  service ``s3express``): awscrt calls ``CreateSession`` for the bucket with
  the client's credentials and renews the session itself;
- uploads with CRC32 where the configured checksum is CRC64NVME (AWS lists
  CRC32, CRC32C, SHA-1 and SHA-256 for S3 Express One Zone, and its SDKs
  default to CRC32 there); CRC32 and CRC32C are used as configured;
- is listed serially (``start-after``, which parallel listing is built on,
  is not supported), in the server's order, which is not key order.

Nothing here was tried against a real directory bucket: no local server
speaks S3 Express. What is tested is what reaches awscrt (host, path,
signing configuration) and the checks below.
"""

from __future__ import annotations

import logging
import re

from awscrt.auth import AwsSigningAlgorithm, AwsSigningConfig

from .config import ChecksumAlgorithm, S3ClientConfig

__all__ = ["DIRECTORY_BUCKET_SUFFIX", "directory_bucket_zone", "is_directory_bucket"]

log = logging.getLogger(__name__)

DIRECTORY_BUCKET_SUFFIX = "--x-s3"
"""The suffix that makes a bucket name a directory bucket's."""

EXPRESS_SIGNING_SERVICE = "s3express"
"""The service name requests to directory buckets are signed for."""

EXPRESS_UPLOAD_CHECKSUM: ChecksumAlgorithm = "CRC32"
"""The upload checksum used for directory buckets in place of CRC64NVME."""

# What the zonal endpoint's host name can hold: lower case letters, digits
# and hyphens, as one DNS label (no dots: they break the TLS wildcard).
_HOST_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_ZONE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)+")


def is_directory_bucket(bucket: str) -> bool:
    """Whether ``bucket`` is named as an S3 Express One Zone directory bucket (``...--x-s3``).

    Only the name is looked at (no request is made), as AWS's endpoint rules
    do. A name with the suffix but no usable zone ID is still a directory
    bucket's name, a malformed one: :func:`directory_bucket_zone` says why.
    """
    return isinstance(bucket, str) and bucket.endswith(DIRECTORY_BUCKET_SUFFIX)


def directory_bucket_zone(bucket: str) -> str:
    """The zone ID in a directory bucket's name: ``usw2-az1`` for ``data--usw2-az1--x-s3``.

    Raises:
        ValueError: ``bucket`` is not a well-formed directory bucket name
            (``<base>--<zone-id>--x-s3``, lower case letters, digits and
            hyphens, at most 63 characters); the message quotes it.
    """
    if not is_directory_bucket(bucket):
        raise ValueError(
            f"{bucket!r} is not a directory bucket name: those end in "
            f"'{DIRECTORY_BUCKET_SUFFIX}' (<base>--<zone-id>--x-s3)"
        )
    base, separator, zone = bucket[: -len(DIRECTORY_BUCKET_SUFFIX)].rpartition("--")
    if not separator or not base or not _ZONE.fullmatch(zone):
        raise ValueError(
            f"Invalid directory bucket name {bucket!r}: expected <base>--<zone-id>--x-s3 "
            "with a zone ID such as 'usw2-az1' (for example 'my-data--usw2-az1--x-s3')"
        )
    if not _HOST_LABEL.fullmatch(bucket):
        raise ValueError(
            f"Invalid directory bucket name {bucket!r}: directory bucket names hold only "
            "lower case letters, digits and hyphens, at most 63 characters (they are a "
            "host name of the zonal endpoint)"
        )
    return zone


def zonal_host(bucket: str, region: str) -> str:
    """The host name of the zonal endpoint of directory bucket ``bucket`` in ``region``."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{bucket}.s3express-{directory_bucket_zone(bucket)}.{region}.{suffix}"


def check_directory_bucket(bucket: str, config: S3ClientConfig) -> None:
    """Refuse requests to directory bucket ``bucket`` that cannot work with ``config``.

    Raises:
        ValueError: a malformed name (see :func:`directory_bucket_zone`), or a
            setting directory buckets do not support; the message names the
            bucket and the ``S3ClientConfig`` field.
    """
    directory_bucket_zone(bucket)
    if config.unsigned:
        raise ValueError(
            f"s3://{bucket} is an S3 Express One Zone directory bucket, which takes no "
            "anonymous requests: S3ClientConfig.unsigned=True cannot be used with it"
        )
    if config.requester_pays:
        raise ValueError(
            f"s3://{bucket} is an S3 Express One Zone directory bucket, which does not "
            "support requester pays: S3ClientConfig.requester_pays=True cannot be used with it"
        )


def check_listing(bucket: str, prefix: str, delimiter: str, config: S3ClientConfig) -> None:
    """Refuse a listing of a directory bucket that S3 Express does not support.

    Raises:
        ValueError: a prefix that does not end in ``/`` or a delimiter other
            than ``/`` (the message quotes them and the bucket).
    """
    if not (config.enable_s3express and is_directory_bucket(bucket)):
        return
    if prefix and not prefix.endswith("/"):
        raise ValueError(
            f"Invalid prefix {prefix!r} for s3://{bucket}: an S3 Express One Zone directory "
            "bucket lists only prefixes that end in '/' (list the directory around it and "
            "filter the keys)"
        )
    if delimiter not in ("", "/"):
        raise ValueError(
            f"Invalid delimiter {delimiter!r} for s3://{bucket}: an S3 Express One Zone "
            "directory bucket supports only '/'"
        )


def express_signing(base: AwsSigningConfig) -> AwsSigningConfig:
    """``base`` (the client's S3 signing) turned into S3 Express session signing."""
    return base.replace(algorithm=AwsSigningAlgorithm.V4_S3EXPRESS, service=EXPRESS_SIGNING_SERVICE)


def upload_checksum(
    bucket: str, configured: ChecksumAlgorithm | None, config: S3ClientConfig
) -> ChecksumAlgorithm | None:
    """The checksum an upload to ``bucket`` sends: ``configured``, or CRC32 for CRC64NVME.

    CRC32 replaces CRC64NVME only for a directory bucket.
    """
    if configured == "CRC64NVME" and config.enable_s3express and is_directory_bucket(bucket):
        return EXPRESS_UPLOAD_CHECKSUM
    return configured


def listing_concurrency(bucket: str, concurrency: int, config: S3ClientConfig) -> int:
    """Page requests a parallel listing of ``bucket`` may have: 1 for a directory bucket.

    Parallel listing cuts the key space with ``start-after``, which directory
    buckets do not support, and relies on key order, which their listings do
    not follow.
    """
    if concurrency > 1 and config.enable_s3express and is_directory_bucket(bucket):
        log.debug("s3://%s is a directory bucket: listed serially", bucket)
        return 1
    return concurrency
