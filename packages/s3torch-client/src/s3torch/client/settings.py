"""Checks of integer settings, shared by every s3torch package.

Every count, size and index a user passes to s3torch is refused the same way
when it is not an int in range: a ``ValueError`` that names the setting and
shows the value given. ``bool`` is refused although it is an ``int`` in
Python: ``prefetch=True`` is a mistake, not ``prefetch=1``.
"""

from __future__ import annotations

__all__ = ["require_int"]


def require_int(name: str, value: object, *, minimum: int = 0, optional: bool = False) -> None:
    """Refuse ``value`` unless it is an ``int`` >= ``minimum`` (or ``None`` when ``optional``).

    >>> require_int("prefetch", 4)
    >>> require_int("copy_threads", 0, minimum=1, optional=True)
    Traceback (most recent call last):
    ...
    ValueError: copy_threads must be None or an int >= 1, got 0

    Args:
        name: The setting, as the user wrote it (named in the error).
        value: What was given.
        minimum: The smallest value allowed.
        optional: Whether ``None`` is allowed.

    Raises:
        ValueError: ``value`` is not allowed.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"None or an int >= {minimum}" if optional else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
