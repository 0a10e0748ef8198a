"""Fixtures of the cross-package tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def user_distributions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seven user distributions (sdists, and wheels built from them), built once.

    ``tools/release.py build``, as the release workflow builds them (never
    the dev-only locals3); shared by the packaging and release tests.
    """
    folder = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "release.py"), "build", "--out", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return folder
