"""s3torch.readers: file-like S3 readers, sequential, range-based and DCP-optimized (no torch).

>>> from s3torch.client import S3Client
>>> from s3torch.readers import S3ReaderConstructor, get_object
>>> client = S3Client("us-east-1")
>>> with get_object(client, "bucket", "data/shard-0001.bin",
...                 reader_constructor=S3ReaderConstructor.range_based()) as reader:
...     reader.seek(1024)
...     header = reader.read(64)
"""

from ._version import __version__
from .base import S3Reader
from .constructor import S3ReaderConstructor, S3ReaderConstructorProtocol, get_object
from .dcp_optimized import DCPOptimizedS3Reader, ItemRange
from .protocols import RawGetClient, RawGetStream
from .ranged import RangedS3Reader
from .sequential import SequentialS3Reader
from .views import join_views, slice_views

__all__ = [
    "DCPOptimizedS3Reader",
    "ItemRange",
    "RangedS3Reader",
    "RawGetClient",
    "RawGetStream",
    "S3Reader",
    "S3ReaderConstructor",
    "S3ReaderConstructorProtocol",
    "SequentialS3Reader",
    "__version__",
    "get_object",
    "join_views",
    "slice_views",
]
