"""A griffe extension for the docs site: Sphinx roles in docstrings as Markdown.

Our docstrings name other objects with Sphinx roles (``:class:`~s3torch.client.S3Client```,
``:meth:`close```). mkdocstrings renders Markdown, where such a role would show as
the literal text ``:class:`` before the name. This extension rewrites each role, once
the whole package is loaded, into inline code: ``~`` keeps only the last component
of the name, as in Sphinx. mkdocs.yml loads it with the python handler's
``extensions`` option; nothing in the packages imports it.
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


def convert(text: str) -> str:
    """``text`` with every Sphinx role rewritten as inline code."""
    return ROLE.sub(role_to_markdown, text)


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring as Markdown inline code."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
