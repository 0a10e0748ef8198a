"""s3torch.checkpoint: ``torch.save`` and ``torch.load`` straight to and from S3.

>>> import torch
>>> from s3torch.checkpoint import S3Checkpoint
>>> checkpoint = S3Checkpoint("us-east-1")
>>> with checkpoint.writer("s3://my-bucket/ckpt/step-100.pt") as writer:
...     torch.save({"weights": torch.ones(3)}, writer)
>>> with checkpoint.reader("s3://my-bucket/ckpt/step-100.pt") as reader:
...     state = torch.load(reader)

Uploads stream while ``torch.save`` serialises and carry a full-object
checksum; a failed or interrupted save leaves nothing behind. Loads are
validated against that checksum before ``torch.load`` reads a byte. The ranks
of a data-parallel job read a checkpoint about once between them with
``checkpoint.reader(uri, process_group=group)``.
"""

from ._version import __version__
from .checkpoint import S3Checkpoint
from .errors import NotACheckpointError
from .interrupts import masked_interrupt
from .reader import S3CheckpointReader
from .writer import S3CheckpointWriter

__all__ = [
    "NotACheckpointError",
    "S3Checkpoint",
    "S3CheckpointReader",
    "S3CheckpointWriter",
    "__version__",
    "masked_interrupt",
]
