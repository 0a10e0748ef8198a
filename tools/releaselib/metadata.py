"""Checks of one distribution's core metadata (a wheel's METADATA or an sdist's PKG-INFO)."""

from __future__ import annotations

import email.message
import re
from collections.abc import Callable
from dataclasses import dataclass

from packaging.metadata import (
    ExceptionGroup,
    InvalidMetadata,
    Metadata,
    RawMetadata,
    parse_email,
)
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from releaselib.projects import Project, ReleaseError, requirement_name, sibling_requirements

PRIVATE = "Private ::"
"""The classifier prefix PyPI refuses to upload (tools/locals3 carries one)."""

Report = Callable[[str, str], None]
"""Records one problem: the field, the message."""

_LINK = re.compile(r"""\b(?:href|src)="([^"]*)\"""")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one built file: which file, which field, what."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


def check_metadata(
    file: str, text: bytes, project: Project, projects: list[Project], version: str
) -> list[Problem]:
    """Every problem of ``file``'s core metadata ``text`` against ``project`` at ``version``."""
    problems: list[Problem] = []

    def problem(field: str, message: str) -> None:
        problems.append(Problem(file, field, message))

    raw, unparsed = parse_email(text)
    for field in unparsed:
        problem(field, "not a valid core metadata field")
    try:
        Metadata.from_raw(raw, validate=True)
    except ExceptionGroup as group:
        for error in group.exceptions:
            field = error.field if isinstance(error, InvalidMetadata) else "metadata"
            problem(field, f"invalid: {error}")
    if canonicalize_name(raw.get("name", "")) != canonicalize_name(project.name):
        problem("Name", f"{raw.get('name')!r}, expected {project.name!r}")
    if raw.get("version") != version:
        problem("Version", f"{raw.get('version')!r}, expected {version!r} (one version for all)")
    if not raw.get("requires_python"):
        problem("Requires-Python", "missing")
    elif raw["requires_python"] != project.requires_python:
        problem(
            "Requires-Python",
            f"{raw['requires_python']!r}, pyproject says {project.requires_python!r}",
        )
    _check_license(raw, project, problem)
    _check_urls_and_classifiers(raw, project, problem)
    _check_pins(raw, project, projects, version, problem)
    _check_description(raw, project, problem)
    return problems


def _check_license(raw: RawMetadata, project: Project, problem: Report) -> None:
    if raw.get("license_expression") != project.license:
        problem(
            "License-Expression", f"{raw.get('license_expression')!r}, expected {project.license!r}"
        )
    if tuple(raw.get("license_files", ())) != project.license_files:
        problem(
            "License-File", f"{raw.get('license_files')}, expected {list(project.license_files)}"
        )


def _check_urls_and_classifiers(raw: RawMetadata, project: Project, problem: Report) -> None:
    urls = raw.get("project_urls", {})
    if not urls:
        problem("Project-URL", "missing")
    elif tuple(urls.items()) != project.urls:
        problem("Project-URL", f"{urls}, pyproject says {dict(project.urls)}")
    classifiers = raw.get("classifiers", [])
    if not classifiers:
        problem("Classifier", "missing")
    elif tuple(classifiers) != project.classifiers:
        problem("Classifier", f"{classifiers}, pyproject says {list(project.classifiers)}")
    private = [c for c in classifiers if c.startswith(PRIVATE)]
    if private:
        problem("Classifier", f"{private}: PyPI refuses such a distribution")


def _check_pins(
    raw: RawMetadata, project: Project, projects: list[Project], version: str, problem: Report
) -> None:
    """Every requirement on a sibling distribution pins exactly ``==version``."""
    siblings = {canonicalize_name(p.name) for p in projects} - {canonicalize_name(project.name)}
    found = set()
    for text in raw.get("requires_dist", []):
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            problem("Requires-Dist", f"{text!r} does not parse: {error}")
            continue
        if canonicalize_name(requirement.name) not in siblings:
            continue
        found.add(canonicalize_name(requirement.name))
        if str(requirement.specifier) != f"=={version}":
            problem(
                "Requires-Dist",
                f"{text!r} must pin {requirement.name}=={version} (every sibling at one version)",
            )
    declared = {
        canonicalize_name(requirement_name(r)) for r in sibling_requirements(project, projects)
    }
    if found != declared:
        problem(
            "Requires-Dist",
            f"requires siblings {sorted(found)}, pyproject declares {sorted(declared)}",
        )


def _check_description(raw: RawMetadata, project: Project, problem: Report) -> None:
    """The long description is the package's README, and renders as PyPI renders it."""
    description = raw.get("description", "")
    if not description.strip():
        problem("Description", "missing: PyPI would show an empty page")
        return
    header = email.message.Message()
    header["Content-Type"] = raw.get("description_content_type", "")
    if header.get_content_type() != "text/markdown":
        problem(
            "Description-Content-Type",
            f"{raw.get('description_content_type')!r}, expected text/markdown (README.md)",
        )
        return
    readme = project.folder / "README.md"
    if readme.exists() and description.strip() != readme.read_text().strip():
        problem("Description", f"differs from {readme.name}: rebuild")
    html = _render_markdown(description, header.get_param("variant"))
    if not html or not html.strip():
        problem("Description", "does not render as Markdown (readme_renderer gave nothing)")
        return
    relative = [link for link in _LINK.findall(html) if not link.startswith(("https://", "#"))]
    if relative:
        problem("Description", f"links {relative} are not absolute https: dead on PyPI")


def _render_markdown(text: str, variant: object) -> str | None:
    try:
        import comrak  # noqa: F401  (readme_renderer renders Markdown with it)
    except ImportError as error:  # pragma: no cover: the release group installs it
        raise ReleaseError(
            "readme-renderer[md] is not installed: uv sync --group release"
        ) from error
    from readme_renderer.markdown import render

    return render(text, variant=variant if isinstance(variant, str) else "GFM")
