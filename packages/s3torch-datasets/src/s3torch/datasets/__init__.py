"""s3torch.datasets: PyTorch datasets over S3 objects that keep a GPU fed from one worker.

>>> from torch.utils.data import DataLoader
>>> from s3torch.datasets import S3IterableDataset
>>> dataset = S3IterableDataset.from_prefix(
...     "s3://my-bucket/train/", region="us-east-1", enable_sharding=True,
...     shuffle=True, transform=lambda reader: reader.read())
>>> loader = DataLoader(dataset, batch_size=32, num_workers=2)
"""

from ._base import DEFAULT_PREFETCH, identity
from ._manifest import (
    MANIFEST_VERSION,
    ManifestError,
    ManifestHeader,
    ManifestMismatchError,
    read_manifest,
)
from ._manifest_writer import ManifestSummary, write_manifest
from ._resume import merge_states
from ._tar_stream import TarShardError
from ._version import __version__
from .iterable_dataset import S3IterableDataset
from .map_dataset import S3MapDataset
from .tar_dataset import S3TarDataset
from .tar_writer import S3TarWriter

__all__ = [
    "DEFAULT_PREFETCH",
    "MANIFEST_VERSION",
    "ManifestError",
    "ManifestHeader",
    "ManifestMismatchError",
    "ManifestSummary",
    "S3IterableDataset",
    "S3MapDataset",
    "S3TarDataset",
    "S3TarWriter",
    "TarShardError",
    "__version__",
    "identity",
    "merge_states",
    "read_manifest",
    "write_manifest",
]
