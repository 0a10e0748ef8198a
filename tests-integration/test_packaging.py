"""Built wheels install into a clean environment and import as a namespace."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")


URLS = {"Homepage", "Documentation", "Repository", "Issues", "Changelog"}


def test_wheels_build_install_and_import_in_a_fresh_venv(repo: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        ["uv", "build", "--all-packages", "-q", "-o", str(dist)],  # sdists, wheels from them
        cwd=repo,
        check=True,
        timeout=600,
    )
    wheels = sorted(dist.glob("s3torch*.whl"))
    published = sorted(path.parent.name for path in (repo / "packages").glob("*/pyproject.toml"))
    by_name = {w.name.split("-")[0].replace("_", "-"): w for w in wheels}
    assert set(published) <= set(by_name), sorted(by_name)
    license_text = (repo / "LICENSE").read_text()
    for wheel in (by_name[name] for name in published):
        archive = zipfile.ZipFile(wheel)
        names = archive.namelist()
        assert "s3torch/__init__.py" not in names, wheel.name
        assert not any(n.startswith(("client/", "src/")) for n in names), wheel.name
        assert any(n.endswith("/py.typed") for n in names), wheel.name
        info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read(f"{info}/licenses/LICENSE").decode() == license_text, wheel.name
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        assert metadata["License-Expression"] == "Apache-2.0", wheel.name
        assert metadata.get_all("License-File") == ["LICENSE"], wheel.name
        urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
        assert set(urls) == URLS, wheel.name
        assert all(url.startswith("https://github.com/s3torch/s3torch") for url in urls.values())
    for name in published:
        sdist = next(dist.glob(f"{name.replace('-', '_')}-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            root = sdist.name.removesuffix(".tar.gz")
            member = archive.extractfile(f"{root}/LICENSE")
            assert member is not None, sdist.name
            assert member.read().decode() == license_text, sdist.name
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
    # The torch layer: its wheel brought torch along (and numpy, without which torch
    # warns on import), every layer shares the namespace, and nothing warns.
    probe = (
        "import s3torch.datasets as d, s3torch.readers as r, s3torch.client as c, torch\n"
        "assert d.S3MapDataset and d.S3IterableDataset and r.S3ReaderConstructor\n"
        "assert getattr(__import__('s3torch'), '__file__', None) is None  # a namespace\n"
        "print(c.__version__, r.__version__, d.__version__)\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split() == [_workspace_version(repo)] * 3


@pytest.mark.parametrize("module", ["s3torch.client", "s3torch.readers", "s3torch.datasets"])
def test_importing_a_layer_in_a_fresh_interpreter_prints_nothing(module: str) -> None:
    """A user's first import shows no warning (torch warns without numpy, for one)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def _workspace_version(repo: Path) -> str:

    return str(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"])
