"""A Ctrl-C that torch reported as something else, found again.

CPython raises a ``KeyboardInterrupt`` at the first Python instruction after
the signal arrives. When the signal arrives while torch's C++ code runs
between two calls into a file object (computing a record's CRC in
``torch.save``, seeking in ``torch.load``), that instruction is the first of
the file object's next method: the interrupt is raised from inside a call
torch made, and torch reports it as its own error (``RuntimeError: ...
unexpected pos ...`` from ``torch.save``, ``AttributeError: ... has no attribute
'read'`` from ``torch.load``), with the ``KeyboardInterrupt`` as its
``__context__``. Lightning handles a ``KeyboardInterrupt`` in ``fit`` (a
graceful shutdown) but not those, so the plugin raises the interrupt itself.
"""

from __future__ import annotations

__all__ = ["reported_interrupt"]

_MAX_CHAIN = 16


def reported_interrupt(error: BaseException) -> KeyboardInterrupt | None:
    """The ``KeyboardInterrupt`` that ``error`` was raised while handling, if any.

    Follows ``__cause__`` and ``__context__`` from ``error`` (not ``error``
    itself), a bounded number of links.
    """
    seen = error.__cause__ or error.__context__
    for _ in range(_MAX_CHAIN):
        if seen is None:
            return None
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
