"""Is this object a checkpoint ``torch.load`` can read? Checked once, before torch sees a byte.

torch's own errors for an object that is not a checkpoint name nothing and
mislead (``KeyError: 101``, an empty ``EOFError``, advice to retry with
``weights_only=False``). What ``torch.load`` reads is one of:

* a zip archive (``torch.save`` since torch 1.6, TorchScript): it starts
  with a local file header and ends with the end-of-central-directory record
  (followed by a comment of at most 65,535 bytes, which torch never writes);
* a pickle starting with torch's magic number
  (``torch.save(..., _use_new_zipfile_serialization=False)``): the pickle
  PROTO opcode, perhaps a FRAME (protocol 4 and later), then the number as a
  LONG1; any other pickle torch refuses ("Invalid magic number", or advice
  about ``weights_only``);
* a tar archive (torch before 0.4): ``ustar`` at byte 257.

Anything else, or a zip archive without its end record (an upload cut short
by another tool: our writers never publish one), raises
:class:`~s3torch.checkpoint.errors.NotACheckpointError`, which names the
object, shows its first bytes (hex) and says what they look like.
"""

from __future__ import annotations

from .errors import NotACheckpointError

__all__ = ["HEAD_BYTES", "TAIL_BYTES", "check_checkpoint_format"]

_ZIP_START = b"PK\x03\x04"
_ZIP_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 65535
_PICKLE_PROTO = 0x80
# torch.serialization.MAGIC_NUMBER, pickled (protocol >= 2) as LONG1 of 10 bytes.
_TORCH_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_MAGIC_WITHIN = 2 + 9 + len(_TORCH_MAGIC)  # PROTO, a FRAME, the LONG1
_TAR_MAGIC = b"ustar"
_TAR_MAGIC_AT = 257
_SHOWN = 16

HEAD_BYTES = _TAR_MAGIC_AT + len(_TAR_MAGIC)
"""How many bytes of the start :func:`check_checkpoint_format` looks at."""
TAIL_BYTES = _END_RECORD_SIZE + _MAX_COMMENT
"""How many bytes of the end :func:`check_checkpoint_format` looks at."""

# Formats a checkpoint is mistaken for, by their first bytes.
_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"(\xb5/\xfd", "zstd-compressed data"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)


def check_checkpoint_format(uri: str, size: int, head: bytes, tail: bytes) -> None:
    """Raise :class:`NotACheckpointError` unless the object looks like what ``torch.load`` reads.

    Args:
        uri: The object, for the message.
        size: Its size in bytes.
        head: Its first :data:`HEAD_BYTES` bytes (all of them, if fewer).
        tail: Its last :data:`TAIL_BYTES` bytes (all of them, if fewer).
    """
    shown = head[:_SHOWN]

    def refuse(message: str, looks_like: str) -> NotACheckpointError:
        return NotACheckpointError(message, uri=uri, size=size, head=shown, looks_like=looks_like)

    if size == 0:
        raise refuse(f"{uri} is not a checkpoint: the object is empty (0 bytes)", "empty")
    if head.startswith(_ZIP_START):
        if _ZIP_END_RECORD not in tail[-TAIL_BYTES:]:
            raise refuse(
                f"{uri} is a truncated zip archive, not a whole checkpoint: its {size} bytes "
                f"end without the zip end-of-central-directory record (ending {tail[-16:]!r}); "
                "it was cut short when it was written",
                "a zip archive cut short",
            )
        return
    if head[0] == _PICKLE_PROTO and _TORCH_MAGIC in head[:_MAGIC_WITHIN]:
        return
    if head[_TAR_MAGIC_AT:HEAD_BYTES] == _TAR_MAGIC:
        return
    looks_like = _looks_like(head)
    raise refuse(
        f"{uri} is not a checkpoint torch.load can read: its {size} bytes start with "
        f"{shown.hex(' ')} ({shown!r}), which looks like {looks_like}; a torch.save checkpoint "
        "is a zip archive (starting 50 4b 03 04, b'PK\\x03\\x04') or a pickle starting with "
        "torch's magic number",
        looks_like,
    )


def _looks_like(head: bytes) -> str:
    """A guess at what ``head`` is the start of, for the message."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:1] == bytes([_PICKLE_PROTO]):
        return "a pickle that torch.save did not write (no torch magic number)"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file (read it with safetensors.torch.load)"
    text = ""
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "text"
    return "binary data of no format s3torch recognises"
