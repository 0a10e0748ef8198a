"""A griffe extension for the docs site: the reST of our docstrings as Markdown.

Our docstrings name other objects with Sphinx roles (``:class:`~s3torch.client.S3Client```,
``:meth:`close```). mkdocstrings renders Markdown, where such a role would show as
the literal text ``:class:`` before the name. This extension rewrites each role, once
the whole package is loaded, into inline code: ``~`` keeps only the last component
of the name, as in Sphinx. It also fences doctest blocks (``>>>`` lines, which
Markdown would take for nested quotes) as ``pycon`` code, and turns the ``::`` that
ends a paragraph before a literal block into ``:`` (the indented block is already
code in Markdown). mkdocs.yml loads it with the python handler's ``extensions``
option; nothing in the packages imports it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`(?P<target>[^`]+)`")
"""A Sphinx cross-reference role and its target."""


def role_to_markdown(match: re.Match[str]) -> str:
    """The Markdown inline code for one role: the target, or its last part after ``~``."""
    target = match["target"]
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def fence_doctests(text: str) -> str:
    """``text`` with each doctest block (a ``>>>`` line up to a blank line) fenced as ``pycon``.

    Doctests of a Google-style ``Examples:`` section are left to griffe.
    """
    lines = text.split("\n")
    out: list[str] = []
    in_fence = False
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        previous = next((kept.strip() for kept in reversed(out) if kept.strip()), "")
        if in_fence or not stripped.startswith(">>>") or previous in GOOGLE_EXAMPLES:
            out.append(line)
            index += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while index < len(lines) and lines[index].strip():
            out.append(lines[index])
            index += 1
        out.append(f"{indent}```")
    return "\n".join(out)


GOOGLE_EXAMPLES = ("Example:", "Examples:")
"""Headings of the Google-style sections whose doctests griffe renders itself."""


def literal_markers(text: str) -> str:
    """``text`` with a paragraph-ending ``::`` (reST's literal-block marker) as ``:``."""
    return LITERAL_MARKER.sub(":", text)


LITERAL_MARKER = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)
"""A ``::`` ending a line after text (a line of only ``::`` is left alone)."""


def convert(text: str) -> str:
    """``text`` with Sphinx roles as inline code, doctests fenced, ``::`` markers as ``:``."""
    return literal_markers(fence_doctests(ROLE.sub(role_to_markdown, text)))


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring as Markdown inline code."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
