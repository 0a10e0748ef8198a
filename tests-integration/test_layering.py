"""Each layer imports only from the layers below it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_import_linter_contracts_are_kept(repo: Path) -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module", ["s3torch.client", "s3torch.readers"])
def test_torch_free_layers_do_not_import_torch(module: str) -> None:
    probe = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'lightning', 'boto3', 'botocore'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def _private_imports_of_other_layers(source: str, own_layer: str) -> list[str]:
    """``s3torch.<layer>._x`` modules a package's source imports from another layer."""

    def private(name: str) -> bool:
        parts = name.split(".")
        return (
            len(parts) >= 3
            and parts[0] == "s3torch"
            and parts[1] != own_layer
            and any(part.startswith("_") for part in parts[2:])
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if private(node.module):
                found.append(node.module)
            else:
                found += [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if private(f"{node.module}.{a.name}")
                ]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if private(alias.name)]
    return found


def test_the_private_import_finder_sees_both_import_forms() -> None:
    source = (
        "from s3torch.client._buffers import FillableBytes\n"
        "import s3torch.client._runtime\n"
        "from s3torch.client import _xml\n"
        "from s3torch.client.buffers import FillableBytes\n"
        "from s3torch.readers._private import ok_in_its_own_layer\n"
    )
    assert _private_imports_of_other_layers(source, "readers") == [
        "s3torch.client._buffers",
        "s3torch.client._runtime",
        "s3torch.client._xml",
    ]


def test_no_package_imports_a_private_module_of_another(repo: Path) -> None:
    offenders = []
    for path in sorted(repo.glob("packages/*/src/s3torch/*/**/*.py")):
        layer = path.parts[path.parts.index("src") + 2]  # src/s3torch/<layer>/...
        for name in _private_imports_of_other_layers(path.read_text(), layer):
            offenders.append(f"{path.relative_to(repo)}: {name}")
    assert offenders == [], "use the lower package's public API instead"
