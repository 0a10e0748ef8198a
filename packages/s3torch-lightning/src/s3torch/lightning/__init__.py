"""s3torch.lightning: Lightning checkpoints on S3, and ``s3://`` for Lightning's directories.

>>> from lightning.pytorch import Trainer
>>> from s3torch.lightning import S3LightningCheckpoint
>>> trainer = Trainer(plugins=[S3LightningCheckpoint("us-east-1")],
...                   default_root_dir="s3://my-bucket/run-1")

Importing it registers :class:`S3FsspecFileSystem` for ``s3://`` in fsspec
where nothing else (s3fs) can serve it; see ``docs/lightning.md``.
"""

try:
    import lightning.pytorch  # noqa: F401 - fail early, with the package to install
except ImportError as error:  # pragma: no cover - exercised in a venv without lightning
    raise ImportError(
        "s3torch.lightning needs PyTorch Lightning: pip install s3torch-lightning "
        "(or pip install lightning)"
    ) from error

from ._version import __version__
from .async_io import S3AsyncCheckpointIO
from .checkpoint_io import S3LightningCheckpoint
from .client_binding import use_client
from .filesystem import S3FsspecFileSystem
from .registration import register_s3_filesystem

__all__ = [
    "S3AsyncCheckpointIO",
    "S3FsspecFileSystem",
    "S3LightningCheckpoint",
    "__version__",
    "register_s3_filesystem",
    "use_client",
]

register_s3_filesystem()
