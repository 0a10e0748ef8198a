"""Build every user distribution, and only those, into one folder."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from releaselib.projects import REPO, Project, ReleaseError

logger = logging.getLogger(__name__)

ARCHIVES = ("*.whl", "*.tar.gz")
"""The files a build writes (and removes first)."""


def build(projects: list[Project], out: Path, repo: Path = REPO) -> list[Path]:
    """Build each project's sdist and wheel (the wheel from the sdist) into ``out``.

    One ``uv build --package NAME --no-sources`` per project: the explicit list
    keeps ``tools/locals3`` out, and ``--no-sources`` builds the metadata that
    will be published, not the workspace's paths. The archives already in
    ``out`` are removed first, so that ``out`` holds this build and nothing else.
    Returns the files written, sorted.
    """
    if shutil.which("uv") is None:
        raise ReleaseError("uv is not on PATH: https://docs.astral.sh/uv/")
    out.mkdir(parents=True, exist_ok=True)
    for pattern in ARCHIVES:
        for old in out.glob(pattern):
            logger.info("removing %s", old)
            old.unlink()
    for project in projects:
        logger.info("building %s", project.name)
        command = ["uv", "build", "--package", project.name, "--no-sources", "-q", "-o", str(out)]
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ReleaseError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}"
            )
    return sorted(p for pattern in ARCHIVES for p in out.glob(pattern))
