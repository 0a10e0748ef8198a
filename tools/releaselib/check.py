"""Verify a folder of built distributions before it is published.

For the version given (or the one ``packages/*`` share) the folder must hold
exactly one wheel and one sdist of every user distribution, no file of
``tools/locals3`` and nothing else; ``twine check --strict`` must pass on each;
each file's metadata must pass :func:`releaselib.metadata.check_metadata`; and
each file must hold its own layer's package and nothing else (``py.typed``
included, never ``s3torch/__init__.py``: ``s3torch`` is a PEP 420 namespace).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from releaselib.metadata import Problem, check_metadata
from releaselib.projects import DEV_ONLY, Project, ReleaseError

NAMESPACE_INIT = "s3torch/__init__.py"


def check(dist: Path, projects: list[Project], version: str) -> list[Problem]:
    """Every problem of the distributions in ``dist``; empty when they are fit to publish."""
    if not dist.is_dir():
        raise ReleaseError(f"{dist} is not a folder: run `tools/release.py build` first")
    problems: list[Problem] = []
    expected: dict[str, tuple[Project, str]] = {}
    for project in projects:
        expected[project.wheel_name(version)] = (project, "wheel")
        expected[project.sdist_name(version)] = (project, "sdist")
    dev_only = DEV_ONLY.replace("-", "_")
    for path in sorted(dist.iterdir()):
        if not path.name.endswith((".whl", ".tar.gz")) or path.name in expected:
            continue
        if path.name.startswith((f"{dev_only}-", f"{DEV_ONLY}-")):
            problems.append(
                Problem(path.name, "distribution", f"{DEV_ONLY} is dev-only: never published")
            )
        else:
            problems.append(
                Problem(path.name, "file", f"not a user distribution at version {version}")
            )
    present = []
    for name, (project, kind) in expected.items():
        path = dist / name
        if not path.is_file():
            problems.append(Problem(name, "file", "missing (tools/release.py build makes it)"))
            continue
        present.append(path)
        try:
            if kind == "wheel":
                problems += _check_wheel(path, project, projects, version)
            else:
                problems += _check_sdist(path, project, projects, version)
        except (OSError, zipfile.BadZipFile, tarfile.TarError, KeyError) as error:
            problems.append(Problem(name, "archive", f"unreadable: {error!r}"))
    problems += twine_check(present)
    return problems


def twine_check(files: list[Path]) -> list[Problem]:
    """``twine check --strict`` on ``files`` (all in one folder): one problem per file it fails."""
    if not files:
        return []
    command = [sys.executable, "-m", "twine", "--no-color", "check", "--strict"]
    # Run in the files' folder, on bare names, and wide: rich wraps long lines at 80 columns.
    result = subprocess.run(
        [*command, *(f.name for f in files)],
        cwd=files[0].parent,
        env={**os.environ, "COLUMNS": "10000"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode == 0:
        return []
    output = (result.stdout + result.stderr).strip()
    # Its report: "Checking FILE: PASSED" or "...: FAILED[ due to warnings]", then the reasons.
    sections = re.split(r"^Checking ", output, flags=re.M)
    problems = []
    for path in files:
        for section in sections:
            head, _, reasons = section.partition("\n")
            if head.startswith(f"{path.name}: ") and "FAILED" in head:
                why = " ".join(reasons.split())
                problems.append(Problem(path.name, "twine check --strict", why or head))
    return problems or [Problem("twine", "twine check --strict", output)]


def _check_wheel(
    path: Path, project: Project, projects: list[Project], version: str
) -> list[Problem]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        info = f"{project.filename_stem}-{version}.dist-info"
        problems = check_metadata(
            path.name, archive.read(f"{info}/METADATA"), project, projects, version
        )
        for license_file in project.license_files:
            problems += _same_file(
                path.name, f"{info}/licenses/{license_file}", archive.read, names, project
            )
    code = [n for n in names if not n.startswith(f"{info}/")]
    return problems + _check_contents(path.name, code, project, prefix="")


def _check_sdist(
    path: Path, project: Project, projects: list[Project], version: str
) -> list[Problem]:
    root = f"{project.filename_stem}-{version}"
    with tarfile.open(path) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]

        def read(name: str) -> bytes:
            member = archive.extractfile(name)
            if member is None:
                raise KeyError(name)
            return member.read()

        problems = check_metadata(path.name, read(f"{root}/PKG-INFO"), project, projects, version)
        for license_file in project.license_files:
            problems += _same_file(path.name, f"{root}/{license_file}", read, names, project)
    outside = [n for n in names if not n.startswith(f"{root}/")]
    if outside:
        problems.append(Problem(path.name, "contents", f"{outside[:3]} outside {root}/"))
    code = [n.removeprefix(f"{root}/") for n in names if n.startswith(f"{root}/src/")]
    return problems + _check_contents(path.name, code, project, prefix="src/")


def _same_file(
    file: str, name: str, read: Callable[[str], bytes], names: list[str], project: Project
) -> list[Problem]:
    """The archive's ``name`` is the project's file of the same base name, byte for byte."""
    if name not in names:
        return [Problem(file, "License-File", f"{name} is not in the archive")]
    source = project.folder / name.rsplit("/", 1)[-1]
    if read(name) != source.read_bytes():
        return [Problem(file, "License-File", f"{name} differs from {source}")]
    return []


def _check_contents(file: str, code: list[str], project: Project, prefix: str) -> list[Problem]:
    """``code`` (paths under ``prefix``) holds the project's own layer and nothing else."""
    problems = []
    if f"{prefix}{NAMESPACE_INIT}" in code:
        problems.append(
            Problem(file, "contents", f"{prefix}{NAMESPACE_INIT}: s3torch is a PEP 420 namespace")
        )
    if project.leaf is None:  # the umbrella: metadata only
        if code:
            problems.append(Problem(file, "contents", f"metadata-only, yet holds {code[:5]}"))
        return problems
    package = f"{prefix}s3torch/{project.leaf}/"
    for required in ("__init__.py", "py.typed"):
        if f"{package}{required}" not in code:
            problems.append(Problem(file, required, f"{package}{required} is missing"))
    foreign = [n for n in code if not n.startswith(package) and n != f"{prefix}{NAMESPACE_INIT}"]
    if foreign:
        problems.append(Problem(file, "contents", f"{foreign[:5]} outside {package}"))
    compiled = [n for n in code if n.endswith((".pyc", ".pyo")) or "/__pycache__/" in n]
    if compiled:
        problems.append(Problem(file, "contents", f"compiled files {compiled[:5]}"))
    return problems
