"""Lay the checked distributions out in publishing order, one folder per dependency level."""

from __future__ import annotations

import shutil
from pathlib import Path

from releaselib.projects import Project, ReleaseError, publish_levels


def stage(dist: Path, out: Path, projects: list[Project], version: str) -> list[Path]:
    """Copy each distribution's wheel and sdist from ``dist`` into ``out/<level>/``.

    Level 1 holds what depends on no sibling (``s3torch-client``), level 2 what
    needs only level 1, and so on; the umbrella comes last. Publishing level
    by level means a distribution is on PyPI only once everything it pins is.
    ``out`` must not exist yet. Returns the level folders, in order.
    """
    if out.exists():
        raise ReleaseError(f"{out} exists: stage into a new folder")
    folders = []
    for number, level in enumerate(publish_levels(projects), start=1):
        folder = out / str(number)
        folder.mkdir(parents=True)
        for project in level:
            for name in (project.wheel_name(version), project.sdist_name(version)):
                if not (dist / name).is_file():
                    raise ReleaseError(f"{dist / name} is missing: build and check first")
                shutil.copy2(dist / name, folder / name)
        folders.append(folder)
    return folders
