"""s3torch.dcp: PyTorch Distributed Checkpoint storage on S3, whole or absent, loaded in parallel.

>>> import torch.distributed.checkpoint as dcp
>>> from s3torch.dcp import S3StorageReader, S3StorageWriter
>>> dcp.save(state_dict, storage_writer=S3StorageWriter("us-east-1", "s3://my-bucket/ckpt"))
>>> dcp.load(state_dict, storage_reader=S3StorageReader("us-east-1", "s3://my-bucket/ckpt"))
"""

from ._version import __version__
from .errors import S3CheckpointError
from .file_system import S3FileSystem
from .prefix_strategy import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3PrefixStrategyBase,
)
from .storage_reader import S3StorageReader
from .storage_writer import S3StorageWriter

__all__ = [
    "BinaryPrefixStrategy",
    "DefaultPrefixStrategy",
    "HexPrefixStrategy",
    "RoundRobinPrefixStrategy",
    "S3CheckpointError",
    "S3FileSystem",
    "S3PrefixStrategyBase",
    "S3StorageReader",
    "S3StorageWriter",
    "__version__",
]
