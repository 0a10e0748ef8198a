"""How a sample's fields are named inside a tar shard (WebDataset's convention).

A sample ``{"__key__": "train/000123", "jpg": ..., "cls": ...}`` is stored as
the members ``train/000123.jpg`` and ``train/000123.cls``. A reader groups
consecutive members by their *stem*, the name up to the first ``"."`` of its
basename, and calls the rest the *extension* (case kept): so a key's basename
must hold no ``"."``, while an extension may (``"seg.png"``).
:func:`member_name` checks both halves and joins them; the reader's
:func:`._tar_stream.split_member_name` splits them back.
"""

from __future__ import annotations

__all__ = ["METADATA_PREFIX", "check_extension", "check_key", "member_name"]

METADATA_PREFIX = "__"
"""Fields named ``__...`` (``__key__``, ``__url__``) are a sample's metadata, not members."""


def check_key(key: object) -> str:
    """Return ``key`` if it can name a sample's members, else raise naming what is wrong.

    A key is a non-empty ``str`` of ``/``-separated segments (a path inside
    the tar): no leading ``"/"``, no empty, ``"."`` or ``".."`` segment, no
    NUL, valid UTF-8, and a last segment (the basename) without ``"."``.

    Raises:
        TypeError: ``key`` is not a ``str``.
        ValueError: ``key`` breaks one of the rules above.
    """
    if not isinstance(key, str):
        raise TypeError(f"__key__ must be a str, got {type(key).__name__} {key!r}")
    problem = _key_problem(key)
    if problem is not None:
        raise ValueError(f"__key__ {key!r} {problem}")
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "is empty"
    if key.startswith("/"):
        return "starts with '/' (member names are relative paths)"
    if "\0" in key:
        return "holds a NUL character"
    if not _is_utf8(key):
        return "is not valid UTF-8 (it holds a lone surrogate)"
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return "has an empty, '.' or '..' path segment"
    if "." in segments[-1]:
        return (
            f"has a '.' in its basename {segments[-1]!r}: readers take the name up to the "
            "basename's first '.' as the key, and the rest as the extension"
        )
    return None


def check_extension(key: str, extension: object) -> str:
    """Return ``extension`` if it can name a member of the sample ``key``, else raise.

    An extension is a non-empty ``str`` with no ``"/"`` or NUL, valid UTF-8.

    Raises:
        TypeError: ``extension`` is not a ``str``.
        ValueError: ``extension`` breaks one of the rules above.
    """
    if not isinstance(extension, str):
        raise TypeError(
            f"sample {key!r}: field names must be str, got {type(extension).__name__} {extension!r}"
        )
    if not extension:
        problem = "is empty"
    elif "/" in extension:
        problem = "holds a '/' (the extension is the end of the member's basename)"
    elif "\0" in extension:
        problem = "holds a NUL character"
    elif not _is_utf8(extension):
        problem = "is not valid UTF-8 (it holds a lone surrogate)"
    else:
        return extension
    raise ValueError(f"sample {key!r}: field {extension!r} {problem}")


def member_name(key: str, extension: str) -> str:
    """The member that holds field ``extension`` of sample ``key``: ``f"{key}.{extension}"``.

    >>> member_name("train/000123", "jpg")
    'train/000123.jpg'

    Raises:
        TypeError, ValueError: as :func:`check_key` and :func:`check_extension`.
    """
    return f"{check_key(key)}.{check_extension(key, extension)}"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
