"""Is this object a checkpoint ``torch.load`` can read? Checked once, before torch sees a byte.

torch's own errors for an object that is not a checkpoint name nothing and
mislead (``KeyError: 101``, an empty ``EOFError``, advice to retry with
``weights_only=False``). What ``torch.load`` reads is one of:

* a zip archive (``torch.save`` since torch 1.6, TorchScript): it starts
  with a local file header and ends with the end-of-central-directory record
  (followed by a comment of at most 65,535 bytes, which torch never writes);
* a pickle (``torch.save(..., _use_new_zipfile_serialization=False)``): it
  starts with the pickle PROTO opcode;
* a tar archive (torch before 0.4): ``ustar`` at byte 257.

Anything else, or a zip archive without its end record (an upload cut short
by another tool: our writers never publish one), raises a ``ValueError``
that names the object and shows how it starts or ends.
"""

from __future__ import annotations

__all__ = ["HEAD_BYTES", "TAIL_BYTES", "check_checkpoint_format"]

_ZIP_START = b"PK\x03\x04"
_ZIP_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 65535
_PICKLE_PROTO = 0x80
_TAR_MAGIC = b"ustar"
_TAR_MAGIC_AT = 257

HEAD_BYTES = _TAR_MAGIC_AT + len(_TAR_MAGIC)
"""How many bytes of the start :func:`check_checkpoint_format` looks at."""
TAIL_BYTES = _END_RECORD_SIZE + _MAX_COMMENT
"""How many bytes of the end :func:`check_checkpoint_format` looks at."""


def check_checkpoint_format(uri: str, size: int, head: bytes, tail: bytes) -> None:
    """Raise ``ValueError`` unless the object looks like something ``torch.load`` reads.

    Args:
        uri: The object, for the message.
        size: Its size in bytes.
        head: Its first :data:`HEAD_BYTES` bytes (all of them, if fewer).
        tail: Its last :data:`TAIL_BYTES` bytes (all of them, if fewer).
    """
    if size == 0:
        raise ValueError(f"{uri} is not a checkpoint: the object is empty (0 bytes)")
    if head.startswith(_ZIP_START):
        if _ZIP_END_RECORD not in tail[-TAIL_BYTES:]:
            raise ValueError(
                f"{uri} is a truncated zip archive, not a whole checkpoint: its {size} bytes "
                f"end without the zip end-of-central-directory record (ending {tail[-16:]!r}); "
                "it was cut short when it was written"
            )
        return
    if head[0] == _PICKLE_PROTO or head[_TAR_MAGIC_AT:HEAD_BYTES] == _TAR_MAGIC:
        return
    raise ValueError(
        f"{uri} is not a checkpoint torch.load can read: it starts with {head[:16]!r} "
        "(a torch.save checkpoint is a zip archive, starting with b'PK\\x03\\x04', or a pickle)"
    )
