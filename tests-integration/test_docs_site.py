"""The docs site builds with ``mkdocs build --strict``, and its API reference is complete.

One build (about 10 s) into a temporary folder, as the README says to run it: any
warning (a broken link or anchor, a page left out of the nav, a docstring that
does not parse, a name mkdocstrings cannot resolve in the PEP 420 namespace)
fails it. The built reference pages then must hold every public name of every
layer, and the configuration page every ``S3ClientConfig`` field.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from s3torch.client import S3ClientConfig

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("client", "readers", "datasets", "checkpoint", "dcp", "lightning")
# Submodules of the client that other layers import: public API beyond the package's __all__.
CLIENT_SUBMODULES = ("buffers", "checksums", "threads")
BUILD_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert warnings == [], "\n".join(warnings)
    return site_dir


def _public_names(module: ModuleType) -> list[str]:
    return [name for name in module.__all__ if not name.startswith("_")]


@pytest.mark.parametrize("layer", LAYERS)
def test_reference_documents_every_public_name(site: Path, layer: str) -> None:
    page = (site / "reference" / layer / "index.html").read_text()
    anchors = set(re.findall(r'id="(s3torch\.[A-Za-z0-9_.]+)"', page))
    module = importlib.import_module(f"s3torch.{layer}")
    missing = [name for name in _public_names(module) if f"s3torch.{layer}.{name}" not in anchors]
    assert missing == [], f"reference/{layer}.md lacks {missing}"
    if layer == "client":
        for sub in CLIENT_SUBMODULES:
            submodule = importlib.import_module(f"s3torch.client.{sub}")
            names = [f"s3torch.client.{sub}.{name}" for name in _public_names(submodule)]
            assert [name for name in names if name not in anchors] == [], sub


def test_every_guide_is_in_the_site(site: Path) -> None:
    pages = sorted(path.stem for path in (REPO / "docs").glob("*.md"))
    assert pages, "no docs pages found"
    built = [
        page
        for page in pages
        if (site / ("" if page == "index" else page) / "index.html").is_file()
    ]
    assert built == pages


def test_reference_renders_no_sphinx_roles(site: Path) -> None:
    page = (site / "reference" / "client" / "index.html").read_text()
    assert "S3ClientConfig" in page
    assert re.findall(r":(?:class|meth|func|attr|mod|data):", page) == []


@pytest.mark.parametrize("page", ["docs/configuration.md", "docs/client.md"])
def test_configuration_tables_list_every_field(page: str) -> None:
    text = (REPO / page).read_text()
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    fields = {field.name for field in dataclasses.fields(S3ClientConfig) if field.name != "_"}
    assert fields - rows == set(), f"{page}'s S3ClientConfig table lacks {sorted(fields - rows)}"


def _rst_roles() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rst_roles", REPO / "tools" / "docsite" / "rst_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_roles_become_inline_code() -> None:
    convert = _rst_roles().convert
    assert convert("See :class:`~s3torch.client.S3Client` and :meth:`close`.") == (
        "See `S3Client` and `close`."
    )
    assert convert(":func:`s3torch.readers.get_object`") == "`s3torch.readers.get_object`"
    assert convert("``literal`` stays") == "``literal`` stays"


def test_doctests_are_fenced_and_literal_markers_become_colons() -> None:
    convert = _rst_roles().convert
    doctest = "Use it:\n\n>>> x = 1\n>>> x\n1\n\nAfter."
    assert convert(doctest) == "Use it:\n\n```pycon\n>>> x = 1\n>>> x\n1\n```\n\nAfter."
    indented = "Like so:\n    >>> f()\n    2"
    assert convert(indented) == "Like so:\n    ```pycon\n    >>> f()\n    2\n    ```"
    section = "Examples:\n    >>> f()\n    2"
    assert convert(section) == section  # griffe's own Examples section
    fenced = "```pycon\n>>> already\n```"
    assert convert(fenced) == fenced
    literal = "Use it in a block::\n\n    with w:\n        pass"
    assert convert(literal) == "Use it in a block:\n\n    with w:\n        pass"
    assert convert("a :: b") == "a :: b"
