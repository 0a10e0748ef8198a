"""s3torch.client: fast, dependable S3 access on the AWS Common Runtime (no torch).

>>> from s3torch.client import S3Client
>>> client = S3Client("us-east-1", endpoint="http://127.0.0.1:9000")
>>> with client.put_object("my-bucket", "hello.txt") as writer:
...     writer.write(b"hello")
>>> client.get_object_stream("my-bucket", "hello.txt").read()
b'hello'
"""

from ._version import __version__
from .client import S3Client
from .config import S3ClientConfig
from .errors import (
    S3AccessDeniedError,
    S3ChecksumMismatchError,
    S3CredentialsError,
    S3Exception,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3ThrottlingError,
    S3TimeoutError,
    S3TransportError,
)
from .models import ListObjectsPage, ObjectChecksum, ObjectInfo
from .parallel_listing import ListPageSource, ParallelListing
from .settings import require_int
from .sharing import check_shared_client
from .stream import ObjectStream
from .uri import parse_s3_uri
from .writer import S3Writer

__all__ = [
    "ListObjectsPage",
    "ListPageSource",
    "ObjectChecksum",
    "ObjectInfo",
    "ObjectStream",
    "ParallelListing",
    "S3AccessDeniedError",
    "S3ChecksumMismatchError",
    "S3Client",
    "S3ClientConfig",
    "S3CredentialsError",
    "S3Exception",
    "S3NotFoundError",
    "S3PreconditionFailedError",
    "S3ThrottlingError",
    "S3TimeoutError",
    "S3TransportError",
    "S3Writer",
    "__version__",
    "check_shared_client",
    "parse_s3_uri",
    "require_int",
]
