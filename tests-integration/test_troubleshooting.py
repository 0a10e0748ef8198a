"""docs/troubleshooting.md keeps up with the code: every error type, every warning, every link.

The page promises to index what a user can meet. These tests fail when a
package exports an exception, or logs a warning, that the page does not
explain, or when one of its links points at a page or heading that is gone.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "troubleshooting.md"
LAYERS = ["client", "readers", "datasets", "checkpoint", "dcp", "lightning"]


def page_text() -> str:
    return " ".join(PAGE.read_text().split())


def exported_exceptions() -> list[str]:
    names = []
    for layer in LAYERS:
        module = importlib.import_module(f"s3torch.{layer}")
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                names.append(name)
    return sorted(set(names))


def logged_warnings() -> list[tuple[str, str]]:
    """``(source file, a literal piece of the message)`` of each warning logged.

    A message is cut at its ``%`` placeholders; every piece of 10 characters
    or more must be on the page (which writes ``...`` for the placeholders).
    """
    found = []
    for path in sorted(REPO.glob("packages/*/src/s3torch/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("warning", "error", "critical")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                for piece in re.split(r"%[-.0-9]*[sdrf]", node.args[0].value):
                    if len(piece.strip(" :;,()")) >= 10:
                        found.append((str(path.relative_to(REPO)), piece.strip(" :;,()")))
    return found


def test_there_is_something_to_check() -> None:
    assert "S3Exception" in exported_exceptions()
    assert len(logged_warnings()) >= 8


@pytest.mark.parametrize("name", exported_exceptions())
def test_every_exported_error_is_explained(name: str) -> None:
    assert f"`{name}`" in page_text(), f"docs/troubleshooting.md does not explain {name}"


@pytest.mark.parametrize(("source", "text"), logged_warnings())
def test_every_warning_we_log_is_explained(source: str, text: str) -> None:
    assert text in page_text(), f"docs/troubleshooting.md does not explain {text!r} ({source})"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_reaches_a_page_and_heading() -> None:
    for target in re.findall(r"\]\(([^)]+)\)", PAGE.read_text()):
        page, _, anchor = target.partition("#")
        path = PAGE if not page else PAGE.parent / page
        assert path.exists(), f"{target}: no page {path}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.MULTILINE)
            assert anchor in {_anchor(h) for h in headings}, f"{target}: no such heading"
