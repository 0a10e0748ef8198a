"""The workspace's own rules: one lockstep version, exact sibling pins, PEP 420 layout."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGES = sorted((Path(__file__).resolve().parent.parent / "packages").glob("*/pyproject.toml"))


def _project(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())["project"]  # type: ignore[no-any-return]


def _names() -> set[str]:
    return {_project(path)["name"] for path in PACKAGES}


def test_there_are_packages() -> None:
    assert "s3torch-client" in _names()


def test_every_package_and_the_root_share_one_version(repo: Path) -> None:
    versions = {path.parent.name: _project(path)["version"] for path in PACKAGES}
    versions["<root>"] = _project(repo / "pyproject.toml")["version"]
    versions["locals3"] = _project(repo / "tools/locals3/pyproject.toml")["version"]
    assert len(set(versions.values())) == 1, versions
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?", next(iter(versions.values())))


@pytest.mark.parametrize("pyproject", PACKAGES, ids=lambda p: p.parent.name)
def test_sibling_dependencies_are_pinned_exactly(pyproject: Path) -> None:
    project = _project(pyproject)
    version = project["version"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    siblings = _names()
    for requirement in requirements:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        if name in siblings:
            assert requirement.replace(" ", "").startswith(f"{name}=={version}") or (
                f"{name}[" in requirement and f"]=={version}" in requirement.replace(" ", "")
            ), f"{pyproject.parent.name}: {requirement!r} must pin =={version}"


UMBRELLA = "s3torch"
"""The metadata-only distribution: extras, no code."""


@pytest.mark.parametrize(
    "pyproject", [p for p in PACKAGES if p.parent.name != UMBRELLA], ids=lambda p: p.parent.name
)
def test_packages_are_pep420_namespace_portions(pyproject: Path) -> None:
    root = pyproject.parent
    assert not (root / "src/s3torch/__init__.py").exists(), "s3torch/ must stay a namespace"
    leaves = [p for p in (root / "src/s3torch").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert len(leaves) == 1, leaves
    assert (leaves[0] / "__init__.py").is_file()
    assert (leaves[0] / "py.typed").is_file()
    assert (root / "README.md").is_file()
    config = tomllib.loads(pyproject.read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/s3torch"]


def test_the_root_lists_every_member_as_a_workspace_source(repo: Path) -> None:
    root = tomllib.loads((repo / "pyproject.toml").read_text())
    sources = root["tool"]["uv"]["sources"]
    for name in _names():
        assert sources.get(name) == {"workspace": True}, name


LICENSE_ID = "Apache-2.0"
URLS = ("Homepage", "Documentation", "Repository", "Issues", "Changelog")
REPOSITORY = "https://github.com/s3torch/s3torch"


def test_the_repository_license_is_the_full_apache_2_text(repo: Path) -> None:
    text = (repo / "LICENSE").read_text()
    assert text.strip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 190


@pytest.mark.parametrize("pyproject", PACKAGES, ids=lambda p: p.parent.name)
def test_every_package_ships_the_license_and_names_it(repo: Path, pyproject: Path) -> None:
    assert (pyproject.parent / "LICENSE").read_text() == (repo / "LICENSE").read_text()
    project = _project(pyproject)
    assert project["license"] == LICENSE_ID
    assert project["license-files"] == ["LICENSE"]


@pytest.mark.parametrize("pyproject", PACKAGES, ids=lambda p: p.parent.name)
def test_every_package_has_project_urls_into_the_repository(repo: Path, pyproject: Path) -> None:
    urls = _project(pyproject)["urls"]
    assert tuple(urls) == URLS
    assert urls["Repository"] == REPOSITORY
    for url in urls.values():
        assert url.startswith(REPOSITORY), url
        _assert_exists_in_repository(repo, url)


@pytest.mark.parametrize("pyproject", PACKAGES, ids=lambda p: p.parent.name)
def test_package_readme_links_are_absolute_and_resolve(repo: Path, pyproject: Path) -> None:
    """PyPI shows the README away from the repository: a relative link would be dead."""
    readme = (pyproject.parent / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(
        r"^\[[^\]]+\]:\s*(\S+)", readme, re.M
    )
    assert links, "a package README links to the project"
    for link in links:
        assert link.startswith("https://"), f"{pyproject.parent.name}: relative link {link!r}"
        if link.startswith(REPOSITORY):
            _assert_exists_in_repository(repo, link)


@pytest.mark.parametrize(
    "pyproject", [p for p in PACKAGES if p.parent.name != UMBRELLA], ids=lambda p: p.parent.name
)
def test_every_layer_has_the_package_version(pyproject: Path) -> None:
    leaf = next(
        p.name
        for p in (pyproject.parent / "src/s3torch").iterdir()
        if p.is_dir() and p.name != "__pycache__"
    )
    module = importlib.import_module(f"s3torch.{leaf}")
    assert module.__version__ == _project(pyproject)["version"]
    assert "__version__" in module.__all__


def _assert_exists_in_repository(repo: Path, url: str) -> None:
    """A ``.../blob/main/<path>`` or ``.../tree/main/<path>`` URL names a file or folder here."""
    match = re.match(rf"{re.escape(REPOSITORY)}/(?:blob|tree)/main/([^#?]+)", url)
    if match:
        assert (repo / match[1]).exists(), f"{url} names {match[1]}, which is not in the repository"


def test_the_umbrella_has_no_code_and_an_extra_per_layer(repo: Path) -> None:
    root = repo / "packages" / UMBRELLA
    assert not (root / "src").exists()
    config = tomllib.loads((root / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"] == {"bypass-selection": True}
    project = config["project"]
    base = {re.split(r"[=\[]", r, maxsplit=1)[0] for r in project["dependencies"]}
    assert base == {"s3torch-client", "s3torch-readers"}
    extras = project["optional-dependencies"]
    layers = {n for n in _names() if n not in {UMBRELLA, *base}}
    for layer in layers:  # s3torch-datasets -> the "datasets" extra, which installs it
        extra = layer.removeprefix("s3torch-")
        assert [r.split("==")[0] for r in extras[extra]] == [layer], extra
    (every,) = extras["all"]
    assert every.startswith(f"{UMBRELLA}[")
    assert set(every[8 : every.index("]")].split(",")) == {
        layer.removeprefix("s3torch-") for layer in layers
    }
