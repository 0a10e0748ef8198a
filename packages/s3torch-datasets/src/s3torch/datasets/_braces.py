"""Brace patterns for shard names: ``s3://b/train-{000000..000127}.tar`` -> 128 URIs."""

from __future__ import annotations

import itertools
import re

__all__ = ["expand_braces"]

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def _alternatives(body: str, pattern: str) -> list[str]:
    numbers = _RANGE.match(body)
    if numbers is None:
        if "," not in body:
            raise ValueError(
                f"{pattern!r}: {{{body}}} is neither a range ({{000..127}}) nor a list ({{a,b}})"
            )
        return body.split(",")
    first, last = numbers.groups()
    low, high = int(first), int(last)
    if high < low:
        raise ValueError(f"{pattern!r}: the range {{{body}}} runs backwards")
    width = len(first) if first.lstrip("-").startswith("0") else 0
    return [f"{n:0{width}d}" for n in range(low, high + 1)]


def expand_braces(pattern: str) -> list[str]:
    """Every string ``pattern`` stands for, in order: the last brace varies fastest.

    ``{000..127}`` is a range of integers, zero-padded to the width of its
    first bound when that starts with ``0``; ``{a,b,c}`` a list. A pattern
    without braces is itself.

    Raises:
        ValueError: a brace that is neither, runs backwards, or is unbalanced.
    """
    pieces: list[list[str]] = []
    at = 0
    for match in _BRACE.finditer(pattern):
        pieces.append([pattern[at : match.start()]])
        pieces.append(_alternatives(match.group(1), pattern))
        at = match.end()
    pieces.append([pattern[at:]])
    for literal in pieces[::2]:
        if "{" in literal[0] or "}" in literal[0]:
            raise ValueError(f"{pattern!r}: unbalanced or nested braces")
    return ["".join(parts) for parts in itertools.product(*pieces)]
