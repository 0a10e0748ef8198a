"""The errors of s3torch.checkpoint (S3's own are :mod:`s3torch.client.errors`).

They survive a process boundary: pickling keeps their fields, and an error
rebuilt from its message alone (``type(error)(str(error))``, as a torch
DataLoader worker or DCP does) keeps the message.
"""

from __future__ import annotations

__all__ = ["NotACheckpointError"]


class NotACheckpointError(ValueError):
    """An object given to ``torch.load`` is not a whole checkpoint ``torch.save`` wrote.

    Raised before torch reads a byte, instead of torch's errors that name
    nothing (``KeyError: 101``, an empty ``EOFError``, advice to retry with
    ``weights_only=False``). A ``ValueError``.

    Attributes:
        uri: The object, ``s3://bucket/key``.
        size: Its size in bytes.
        head: Its first bytes (at most 16), as read.
        looks_like: What those bytes look like (``"empty"``, ``"text"``,
            ``"gzip-compressed data"``, ``"a zip archive cut short"``...).
    """

    def __init__(
        self,
        message: str,
        *,
        uri: str | None = None,
        size: int | None = None,
        head: bytes = b"",
        looks_like: str | None = None,
    ) -> None:
        super().__init__(message)
        self.uri = uri
        self.size = size
        self.head = head
        self.looks_like = looks_like

    def __reduce__(self) -> tuple[object, ...]:
        fields = {
            "uri": self.uri,
            "size": self.size,
            "head": self.head,
            "looks_like": self.looks_like,
        }
        return (_rebuild, (type(self), str(self), fields))


def _rebuild(
    cls: type[NotACheckpointError], message: str, fields: dict[str, object]
) -> NotACheckpointError:
    return cls(message, **fields)  # type: ignore[arg-type]
