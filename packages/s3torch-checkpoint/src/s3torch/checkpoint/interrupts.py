"""A Ctrl-C that torch reported as one of its own errors, found again.

CPython raises a ``KeyboardInterrupt`` at the first Python instruction after
the signal arrives. When the signal arrives while torch's C++ code runs
between two calls into a file object (computing a record's CRC-32 in
``torch.save``, say), that instruction is the first of the file object's next
method, before any ``try`` in it can catch it: the interrupt is raised from a
call torch made, and torch reports it as its own error (``RuntimeError: ...
unexpected pos ...`` from ``torch.save``), with the ``KeyboardInterrupt`` in
its ``__context__`` chain. :class:`~s3torch.checkpoint.S3CheckpointWriter`
raises such an interrupt itself; :func:`masked_interrupt` lets other code
around ``torch.save`` and ``torch.load`` do the same.
"""

from __future__ import annotations

__all__ = ["masked_interrupt"]

_MAX_CHAIN = 16


def masked_interrupt(error: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` that ``error`` was raised while handling, if any.

    Follows ``__cause__`` and ``__context__`` from ``error`` (not ``error``
    itself), a bounded number of links::

        try:
            torch.save(state, writer)
        except Exception as error:
            if (interrupt := masked_interrupt(error)) is not None:
                raise interrupt from error
            raise
    """
    seen = error.__cause__ or error.__context__
    for _ in range(_MAX_CHAIN):
        if seen is None:
            return None
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
