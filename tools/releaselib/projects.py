"""The user distributions of the workspace, as their ``pyproject.toml`` files declare them.

Only ``packages/*`` is read: ``tools/locals3`` (the dev-only test servers) is
never a user distribution, whatever the workspace's members are.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REPO = Path(__file__).resolve().parent.parent.parent
"""The repository root."""

PACKAGES = "packages"
"""Where the user distributions live, one folder each."""

DEV_ONLY = "s3torch-locals3"
"""The workspace's dev-only distribution (tools/locals3): never built or published."""

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class ReleaseError(Exception):
    """The workspace or the built files are not fit to release; the message says what."""


@dataclass(frozen=True)
class Project:
    """One user distribution, from its ``pyproject.toml``."""

    name: str
    """The distribution name, e.g. ``s3torch-client``."""
    folder: Path
    """Its folder, ``packages/<name>``."""
    version: str
    requires_python: str
    license: str
    license_files: tuple[str, ...]
    classifiers: tuple[str, ...]
    urls: tuple[tuple[str, str], ...]
    """``[project.urls]`` in the file's order."""
    requirements: tuple[str, ...]
    """``dependencies`` and every extra's requirements, as written."""
    leaf: str | None
    """The namespace portion it ships (``client`` for ``s3torch/client``); None for the
    metadata-only umbrella."""

    @property
    def filename_stem(self) -> str:
        """The name as it starts wheel and sdist file names (``s3torch_client``)."""
        return re.sub(r"[-_.]+", "_", self.name).lower()

    def wheel_name(self, version: str) -> str:
        """The file name of its pure-Python wheel at ``version``."""
        return f"{self.filename_stem}-{version}-py3-none-any.whl"

    def sdist_name(self, version: str) -> str:
        """The file name of its sdist at ``version``."""
        return f"{self.filename_stem}-{version}.tar.gz"


def requirement_name(requirement: str) -> str:
    """The distribution a requirement names: ``"s3torch[a]==1"`` -> ``"s3torch"``."""
    match = _NAME.match(requirement)
    if not match:
        raise ReleaseError(f"cannot read the distribution name of requirement {requirement!r}")
    return match.group(1)


def read_pyproject(path: Path) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` at ``path``."""
    config: dict[str, Any] = tomllib.loads(path.read_text())
    return config


def load_projects(repo: Path = REPO) -> list[Project]:
    """Every user distribution under ``repo/packages``, sorted by name."""
    projects = []
    for path in sorted((repo / PACKAGES).glob("*/pyproject.toml")):
        config = read_pyproject(path)
        table = config["project"]
        requirements = list(table.get("dependencies", []))
        for extra in table.get("optional-dependencies", {}).values():
            requirements += extra
        source = path.parent / "src" / "s3torch"
        leaves = sorted(p.name for p in source.glob("*") if p.is_dir() and p.name != "__pycache__")
        if len(leaves) > 1:
            raise ReleaseError(f"{path}: ships {leaves}: one namespace portion per distribution")
        projects.append(
            Project(
                name=table["name"],
                folder=path.parent,
                version=table["version"],
                requires_python=table.get("requires-python", ""),
                license=table.get("license", ""),
                license_files=tuple(table.get("license-files", ())),
                classifiers=tuple(table.get("classifiers", ())),
                urls=tuple(table.get("urls", {}).items()),
                requirements=tuple(requirements),
                leaf=leaves[0] if leaves else None,
            )
        )
    if not projects:
        raise ReleaseError(f"no distributions under {repo / PACKAGES}")
    if any(p.name == DEV_ONLY for p in projects):
        raise ReleaseError(f"{DEV_ONLY} is dev-only and must stay out of {PACKAGES}/")
    return sorted(projects, key=lambda p: p.name)


def workspace_version(projects: list[Project]) -> str:
    """The one version every distribution has; a ReleaseError names them if they differ."""
    versions = {p.name: p.version for p in projects}
    if len(set(versions.values())) != 1:
        raise ReleaseError(f"the distributions disagree on their version: {versions}")
    return projects[0].version


def sibling_requirements(project: Project, projects: list[Project]) -> list[str]:
    """``project``'s requirements on other user distributions (itself excluded)."""
    names = {p.name for p in projects}
    return [
        r
        for r in project.requirements
        if requirement_name(r) in names and requirement_name(r) != project.name
    ]


def publish_levels(projects: list[Project]) -> list[list[Project]]:
    """The distributions by dependency depth: each level needs only the levels before it.

    ``[[client], [readers], [checkpoint, datasets, dcp], [lightning], [s3torch]]`` today
    (the umbrella's extras make it depend on every layer).
    """
    by_name = {p.name: p for p in projects}
    depth: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            raise ReleaseError(f"dependency cycle: {' -> '.join((*path, name))}")
        if name not in depth:
            needs = [requirement_name(r) for r in sibling_requirements(by_name[name], projects)]
            depth[name] = 1 + max((visit(n, (*path, name)) for n in needs), default=-1)
        return depth[name]

    for project in projects:
        visit(project.name, ())
    levels: list[list[Project]] = [[] for _ in range(max(depth.values()) + 1)]
    for project in projects:
        levels[depth[project.name]].append(project)
    return levels
