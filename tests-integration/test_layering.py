"""Each layer imports only from the layers below it."""

from __future__ import annotations

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
