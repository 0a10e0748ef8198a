"""Every ```python example of the README and the docs runs, as a reader would run it.

The pages are found by glob (``README.md``, ``docs/*.md``, ``packages/*/README.md``),
so a new page is covered as soon as it exists. Each block runs alone in a fresh
interpreter, in an empty temporary directory, against the moto test server:
``AWS_ENDPOINT_URL`` points at it (``S3Client`` honours it when no endpoint is
given), the credentials are the fake ones the locals3 plugin set, and the bucket
``my-bucket`` is created empty for the block and removed after it. A block
preceded by the line ``<!-- not-run -->`` is skipped (it needs torchrun, a GPU
or AWS). Line numbers in a failing block's traceback are the page's own.

Each page's examples keep to a key prefix of their own (``page_prefix``: ``client/``
for docs/client.md), so that a reader who runs the pages one after another against
one bucket never finds another page's objects under the prefix an example lists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from locals3.pytest_plugin import empty_and_remove

REPO = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/*.md", "packages/*/README.md")
NOT_RUN = "<!-- not-run -->"
BUCKET = "my-bucket"
TIMEOUT_S = 300

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Example:
    """One fenced ```python block of a page."""

    page: str
    """The page, relative to the repository root."""
    line: int
    """The page's line number of the block's first line of code."""
    code: str
    run: bool
    """False where the block is marked ``<!-- not-run -->``."""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def script(self) -> str:
        """The code, shifted so that its line numbers are the page's."""
        return "\n" * (self.line - 1) + self.code


def extract_examples(text: str, page: str) -> list[Example]:
    """Every ```python block of ``text``, in order; other fences are passed over."""
    examples: list[Example] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        if opening["info"].lower() in ("python", "py"):
            previous = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
            examples.append(
                Example(page, index + 2, "\n".join(body) + "\n", run=previous != NOT_RUN)
            )
        index = end + 1
    return examples


def extract_tables(text: str) -> list[tuple[int, list[str]]]:
    """``(first line number, lines)`` of each Markdown table outside code fences."""
    tables: list[tuple[int, list[str]]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if opening is not None and (fence is None or line.strip().startswith(fence)):
            fence = opening["fence"] if fence is None else None
            continue
        if fence is not None or not line.startswith("|"):
            continue
        if tables and tables[-1][0] + len(tables[-1][1]) == number:
            tables[-1][1].append(line)
        else:
            tables.append((number, [line]))
    return tables


def table_problems(table: list[str]) -> list[str]:
    """Why ``table`` would not render as a table with rows (empty: it would)."""
    if len(table) < 3:
        return ["a table needs a header, a separator row and at least one row"]
    if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", table[1].strip()):
        return [f"the second line is not a separator row: {table[1]!r}"]
    cells = [len(row.replace("\\|", "").strip().strip("|").split("|")) for row in table]
    return [
        f"row {index + 1} has {count} cells, the header {cells[0]}"
        for index, count in enumerate(cells)
        if count != cells[0]
    ]


def _pages() -> list[Path]:
    return sorted({path for pattern in PAGES for path in REPO.glob(pattern)})


def _examples() -> list[Example]:
    return [
        example
        for page in _pages()
        for example in extract_examples(page.read_text(), str(page.relative_to(REPO)))
    ]


EXAMPLES = _examples()

# The keys an example names: an s3:// URI in my-bucket, the key after "my-bucket", a
# boto3 Key= or a listing's prefix= (where the example spells it out).
_KEYS = re.compile(
    r's3://my-bucket/(?P<uri>[^"\'\s]*)'
    r'|"my-bucket",\s*f?"(?P<key>[^"]*)"'
    r'|\b(?:Key|prefix)=f?"(?P<named>[^"]*)"'
)


def page_prefix(page: str) -> str:
    """The key prefix of ``page``'s examples: ``readme/``, ``client/``, ``dcp-readme/``..."""
    path = Path(page)
    if page == "README.md":
        return "readme/"
    if path.parent.name == "docs":
        return f"{path.stem}/"
    return f"{path.parent.name.removeprefix('s3torch-')}-readme/"


def keys_outside_prefix(example: Example) -> list[str]:
    """The keys ``example`` names that are not under its page's prefix."""
    prefix = page_prefix(example.page)
    keys = [
        next(key for key in match.groups() if key is not None)
        for match in _KEYS.finditer(example.code)
    ]
    return [key for key in keys if not key.startswith(prefix)]


DCP_SINGLE_PROCESS_NOTICE = "torch.distributed is disabled, unavailable or uninitialized"


@pytest.fixture
def my_bucket(boto3_s3: Any) -> Iterator[str]:
    """``my-bucket``, created empty for one example and removed after it."""
    boto3_s3.create_bucket(Bucket=BUCKET)
    yield BUCKET
    empty_and_remove(boto3_s3, BUCKET)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.where)
def test_example_runs(example: Example, s3_endpoint: str, my_bucket: str, tmp_path: Path) -> None:
    if not example.run:
        pytest.skip(f"{example.where} is marked {NOT_RUN}")
    script = tmp_path / f"{example.page.replace('/', '_')}_line_{example.line}.py"
    script.write_text(example.script())
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint}
    # torch's own notice on every DCP save or load in a single process (the
    # one-process examples of docs/dcp.md): expected there, not a problem of ours.
    env["PYTHONWARNINGS"] = f"ignore:{DCP_SINGLE_PROCESS_NOTICE}:UserWarning"
    env.pop("PYTHONPATH", None)  # the example sees what an installed user would
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{example.where}: the example did not finish in {TIMEOUT_S} s\n{error}")
    output = f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{example.where}: the example failed\n{output}"
    assert "Warning" not in result.stderr, f"{example.where}: the example warns\n{output}"


@pytest.mark.parametrize("page", _pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_tables_have_a_separator_and_rows(page: Path) -> None:
    problems = [
        f"{page.relative_to(REPO)}:{line}: {problem}"
        for line, table in extract_tables(page.read_text())
        for problem in table_problems(table)
    ]
    assert problems == []


def test_table_checks_find_a_missing_separator_and_an_empty_table() -> None:
    text = "\n".join(
        [
            "| a | b |",  # 1
            "| 1 | 2 |",  # 2
            "",  # 3
            "```",  # 4
            "| in a fence |",  # 5
            "```",  # 6
            "| header | only |",  # 7
            "",  # 8
            "| x | y `a\\|b` |",  # 9
            "| --- | ---: |",  # 10
            "| 1 | 2 |",  # 11
            "| 1 | 2 | 3 |",  # 12
        ]
    )
    tables = extract_tables(text)
    assert [line for line, _ in tables] == [1, 7, 9]
    assert [table_problems(table) for _, table in tables] == [
        ["a table needs a header, a separator row and at least one row"],
        ["a table needs a header, a separator row and at least one row"],
        ["row 4 has 3 cells, the header 2"],
    ]
    assert table_problems(["| a |", "|---|", "| b |"]) == []
    assert table_problems(["| a |", "| b |", "| c |"]) == [
        "the second line is not a separator row: '| b |'"
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.where)
def test_example_keeps_to_its_page_prefix(example: Example) -> None:
    assert keys_outside_prefix(example) == [], (
        f"{example.where}: use keys under s3://my-bucket/{page_prefix(example.page)}"
    )


def test_page_prefixes_are_distinct_and_checks_find_a_stray_key() -> None:
    pages = {example.page for example in EXAMPLES}
    assert len({page_prefix(page) for page in pages}) == len(pages)
    assert page_prefix("packages/s3torch-dcp/README.md") == "dcp-readme/"
    code = (
        'a = "s3://my-bucket/dcp/x"\n'
        'client.put_object("my-bucket", f"train/{i}")\n'
        'client.list_objects("my-bucket", prefix="dcp/")\n'
        's3.put_object(Bucket="my-bucket", Key="y.pt")\n'
    )
    assert keys_outside_prefix(Example("docs/dcp.md", 1, code, run=True)) == ["train/{i}", "y.pt"]


def test_every_page_with_examples_is_found() -> None:
    pages = {example.page for example in EXAMPLES}
    assert {"README.md", "docs/client.md", "docs/readers.md", "docs/datasets.md"} <= pages
    assert sum(example.run for example in EXAMPLES) >= 10


def test_extraction_keeps_line_numbers_markers_and_skips_other_languages() -> None:
    page = "\n".join(
        [
            "# Title",  # 1
            "```bash",  # 2
            "echo not python",  # 3
            "```",  # 4
            "```python",  # 5
            "x = 1",  # 6
            "",  # 7
            "print(x)",  # 8
            "```",  # 9
            NOT_RUN,  # 10
            "",  # 11
            "```python",  # 12
            "import torch.distributed  # needs torchrun",  # 13
            "```",  # 14
            "- a list item:",  # 15
            "  ```py",  # 16
            "  y = 2",  # 17
            "  ```",  # 18
        ]
    )
    examples = extract_examples(page, "docs/x.md")
    assert [(e.line, e.code, e.run) for e in examples] == [
        (6, "x = 1\n\nprint(x)\n", True),
        (13, "import torch.distributed  # needs torchrun\n", False),
        (17, "y = 2\n", True),
    ]
    assert examples[0].script().splitlines()[5] == "x = 1"
    assert examples[0].where == "docs/x.md:6"
