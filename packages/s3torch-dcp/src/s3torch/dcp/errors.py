"""The error a failed checkpoint file raises: which rank, which file, and why (its cause)."""

from __future__ import annotations

import pickle

__all__ = ["S3CheckpointError"]


class S3CheckpointError(RuntimeError):
    """Writing or reading one file of a DCP checkpoint failed.

    The message names the rank and the file's URI; the original exception is
    the ``__cause__``. Under ``torch.distributed.checkpoint.save``/``load``
    torch reports it inside its ``CheckpointException`` (which derives from
    ``BaseException``), keyed by rank.

    Attributes:
        rank: The rank that failed (0 outside a process group).
        uri: The ``s3://`` URI of the file.
    """

    def __init__(self, message: str, *, rank: int, uri: str) -> None:
        super().__init__(message)
        self.rank = rank
        self.uri = uri

    def __reduce__(self) -> tuple[object, ...]:
        # torch gathers a multi-rank load's failures by pickling them: the
        # cause travels too (an S3ChecksumMismatchError, say), unless it
        # cannot be pickled, when the message alone still names it.
        cause = self.__cause__
        if cause is not None:
            try:
                pickle.dumps(cause)
            except Exception:
                cause = None
        return (_rebuild, (str(self), self.rank, self.uri, cause))


def _rebuild(
    message: str, rank: int, uri: str, cause: BaseException | None = None
) -> S3CheckpointError:
    error = S3CheckpointError(message, rank=rank, uri=uri)
    error.__cause__ = cause
    return error
