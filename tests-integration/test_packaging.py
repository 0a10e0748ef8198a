"""Built wheels install into a clean environment and import as a namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")


def test_wheels_build_install_and_import_in_a_fresh_venv(repo: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        ["uv", "build", "--all-packages", "--wheel", "-q", "-o", str(dist)],
        cwd=repo,
        check=True,
        timeout=600,
    )
    wheels = sorted(dist.glob("s3torch*.whl"))
    assert any(w.name.startswith("s3torch_client-") for w in wheels)
    for wheel in wheels:
        names = zipfile.ZipFile(wheel).namelist()
        assert "s3torch/__init__.py" not in names, wheel.name
        assert not any(n.startswith(("client/", "src/")) for n in names), wheel.name
        assert any(n.endswith("/py.typed") for n in names), wheel.name
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        ["uv", "pip", "install", "-q", "-p", str(python), *map(str, wheels)],
        check=True,
        timeout=600,
    )
    probe = (
        "import sys, s3torch.client as c\n"
        "assert c.S3Client and c.parse_s3_uri('s3://bkt/k') == ('bkt', 'k')\n"
        "assert 'torch' not in sys.modules\n"
        "print(c.__version__)\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _workspace_version(repo)
    # The torch layer: its wheel brought torch along, and every layer shares the namespace.
    probe = (
        "import s3torch.datasets as d, s3torch.readers as r, torch\n"
        "assert d.S3MapDataset and d.S3IterableDataset and r.S3ReaderConstructor\n"
        "assert getattr(__import__('s3torch'), '__file__', None) is None  # a namespace\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _workspace_version(repo: Path) -> str:

    return str(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"])
