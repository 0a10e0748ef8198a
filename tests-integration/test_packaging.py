"""Built wheels, installed one profile at a time into a venv of their own, import and work.

``tools/release.py build`` builds every wheel once; each install profile
(``pip install s3torch``, ``s3torch-datasets`` alone, ``s3torch-dcp`` alone,
``s3torch-lightning`` alone, ``s3torch[all]``) goes into its own venv, which
holds the wheels it asks for and their dependencies and nothing else of
s3torch; ``packaging_probe.py`` then imports the layers the profile should
have, fails to import the others, and round-trips through each against the
test server.

The venvs live in ``.cache/packaging-venvs/`` (git-ignored) and are reused
across runs: uv hard-links torch from its cache, and every run reinstalls the
s3torch wheels and removes any s3torch distribution the profile should not
have, so each run tests the wheels just built.
"""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")

REPO = Path(__file__).resolve().parent.parent
UMBRELLA = "s3torch"
PROBE = Path(__file__).with_name("packaging_probe.py")


def _projects() -> dict[str, dict[str, Any]]:
    """Every published distribution of the workspace, by name: its ``[project]`` table."""
    projects = {}
    for path in sorted((REPO / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(path.read_text())["project"]
        projects[project["name"]] = project
    return projects


PROJECTS = _projects()
VERSION = PROJECTS[UMBRELLA]["version"]
LAYERS = sorted(name.removeprefix("s3torch-") for name in PROJECTS if name != UMBRELLA)
"""Every importable layer: ``client``, ``readers``, ``datasets``, ..."""


def _requirement(text: str) -> tuple[str, list[str]]:
    """``"s3torch[a,b]==1"`` -> ``("s3torch", ["a", "b"])``."""
    match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", text)
    assert match, text
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return match.group(1), extras


def closure(requirement: str) -> set[str]:
    """The workspace distributions that installing ``requirement`` brings in."""
    found: set[str] = set()
    pending = [_requirement(requirement)]
    while pending:
        name, extras = pending.pop()
        if name not in PROJECTS:
            continue
        project = PROJECTS[name]
        found.add(name)
        requirements = list(project.get("dependencies", []))
        for extra in extras:
            requirements += project["optional-dependencies"][extra]
        pending += [_requirement(r) for r in requirements]
    return found


PROFILES = {
    "s3torch": ["client", "readers"],
    "s3torch-datasets": ["client", "readers", "datasets"],
    "s3torch-dcp": ["client", "readers", "dcp"],
    "s3torch-lightning": ["client", "readers", "checkpoint", "lightning"],
    "s3torch[all]": LAYERS,
}
"""What each profile installs -> the layers it must have (and nothing else)."""


@pytest.fixture(scope="module")
def dist(user_distributions: Path) -> Path:
    """Every user sdist, and every wheel built from its sdist, once (conftest.py)."""
    return user_distributions


@pytest.fixture(scope="module")
def wheels(dist: Path) -> dict[str, Path]:
    """Every published wheel of the workspace, by distribution name."""
    built = {}
    for wheel in dist.glob("s3torch*.whl"):
        name = wheel.name.split("-")[0].replace("_", "-")
        built[name] = wheel
    assert set(built) == set(PROJECTS), sorted(built)
    return built


def test_every_wheel_is_a_namespace_portion_or_metadata_only(wheels: dict[str, Path]) -> None:
    for name, wheel in wheels.items():
        names = zipfile.ZipFile(wheel).namelist()
        assert wheel.name.startswith(f"{name.replace('-', '_')}-{VERSION}-"), wheel.name
        if name == UMBRELLA:
            assert all(".dist-info/" in n for n in names), names
            continue
        leaf = name.removeprefix("s3torch-")
        assert "s3torch/__init__.py" not in names, wheel.name
        assert f"s3torch/{leaf}/__init__.py" in names, wheel.name
        assert f"s3torch/{leaf}/py.typed" in names, wheel.name
        code = [n for n in names if ".dist-info/" not in n]
        assert all(n.startswith(f"s3torch/{leaf}/") for n in code), wheel.name


@pytest.mark.parametrize("profile", PROFILES)
def test_each_install_profile_has_its_layers_and_only_those(
    profile: str, wheels: dict[str, Path], s3_endpoint: str, bucket: str
) -> None:
    name, extras = _requirement(profile)
    if name not in PROJECTS:
        pytest.skip(f"{name} is not in this workspace")
    layers = PROFILES[profile]
    wanted = closure(profile)
    assert {n.removeprefix("s3torch-") for n in wanted - {UMBRELLA}} == set(layers), wanted
    python = _venv(profile)
    # Nothing of s3torch but what this profile installs (a reused venv may hold an old set).
    stray = sorted(_installed_s3torch(python) - wanted)
    if stray:
        _uv("pip", "uninstall", "-p", str(python), *stray)
    target = (
        str(wheels[name]) if not extras else f"{name}[{','.join(extras)}] @ {wheels[name].as_uri()}"
    )
    others = [str(wheels[n]) for n in sorted(wanted - {name})]
    reinstall = [arg for n in sorted(wanted) for arg in ("--reinstall-package", n)]
    _uv("pip", "install", "-q", "-p", str(python), *reinstall, target, *others)
    assert _installed_s3torch(python) == wanted
    result = subprocess.run(
        [str(python), str(PROBE), s3_endpoint, bucket, VERSION, ",".join(layers), ",".join(LAYERS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"


URLS = {"Homepage", "Documentation", "Repository", "Issues", "Changelog"}


def test_every_wheel_and_sdist_carries_the_license_and_the_project_urls(
    dist: Path, wheels: dict[str, Path]
) -> None:
    license_text = (REPO / "LICENSE").read_text()
    for name, wheel in wheels.items():
        archive = zipfile.ZipFile(wheel)
        names = archive.namelist()
        info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read(f"{info}/licenses/LICENSE").decode() == license_text, wheel.name
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        assert metadata["License-Expression"] == "Apache-2.0", wheel.name
        assert metadata.get_all("License-File") == ["LICENSE"], wheel.name
        urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
        assert set(urls) == URLS, wheel.name
        assert all(url.startswith("https://github.com/s3torch/s3torch") for url in urls.values())
        sdist = next(dist.glob(f"{name.replace('-', '_')}-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = tar.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/LICENSE")
            assert member is not None, sdist.name
            assert member.read().decode() == license_text, sdist.name


@pytest.mark.parametrize("module", [f"s3torch.{layer}" for layer in LAYERS])
def test_importing_a_layer_in_a_fresh_interpreter_prints_nothing(module: str) -> None:
    """A user's first import shows no warning (torch warns without numpy, for one)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def _venv(profile: str) -> Path:
    """The profile's venv, made on first use and kept (see the module's docstring)."""
    folder = REPO / ".cache" / "packaging-venvs" / re.sub(r"[^A-Za-z0-9_.-]", "_", profile)
    python = folder / "bin" / "python"
    if not python.exists():
        _uv("venv", "-q", "-p", sys.executable, str(folder))
    return python


def _installed_s3torch(python: Path) -> set[str]:
    listed = subprocess.run(
        ["uv", "pip", "list", "-p", str(python), "--format", "freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    names = {line.split("==")[0].strip() for line in listed.splitlines() if line.strip()}
    return {n for n in names if n == UMBRELLA or n.startswith(f"{UMBRELLA}-")}


def _uv(*args: str) -> None:
    subprocess.run(["uv", *args], check=True, timeout=900)
