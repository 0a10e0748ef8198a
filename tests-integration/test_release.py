"""tools/release.py, run as the release workflow runs it, and the workflows themselves.

The seven user distributions are built once per module (``release.py build``
into a temporary folder, about 10 s); ``release.py check`` must pass on them,
and fail, naming the file and the field, on copies broken one way each (a
wheel's metadata edited, a file removed or added, the dev-only locals3 built
alongside). ``version`` runs on a copy of the workspace's pyproject files.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "tools" / "release.py"
WORKFLOWS = REPO / ".github" / "workflows"
UMBRELLA = "s3torch"
DEV_ONLY = "s3torch-locals3"


def _projects() -> dict[str, dict[str, Any]]:
    projects = {}
    for path in sorted((REPO / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(path.read_text())["project"]
        projects[project["name"]] = project
    return projects


PROJECTS = _projects()
VERSION = PROJECTS[UMBRELLA]["version"]
USER_DISTRIBUTIONS = {
    "s3torch-client",
    "s3torch-readers",
    "s3torch-datasets",
    "s3torch-checkpoint",
    "s3torch-dcp",
    "s3torch-lightning",
    UMBRELLA,
}


def release(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python tools/release.py ARGS`` with this interpreter (the dev group has twine)."""
    return subprocess.run(
        [sys.executable, str(RELEASE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def stem(name: str) -> str:
    return name.replace("-", "_")


@pytest.fixture(scope="module")
def dist(user_distributions: Path) -> Path:
    """The seven user distributions, built once by ``release.py build`` (conftest.py)."""
    return user_distributions


@pytest.fixture
def broken(dist: Path, tmp_path: Path) -> Path:
    """A copy of the good build, for a test to break."""
    copy = tmp_path / "dist"
    shutil.copytree(dist, copy)
    return copy


def test_the_packages_are_the_seven_user_distributions() -> None:
    assert set(PROJECTS) == USER_DISTRIBUTIONS


def test_build_writes_one_wheel_and_one_sdist_of_each_user_distribution(dist: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert wheels == sorted(f"{stem(n)}-{VERSION}-py3-none-any.whl" for n in USER_DISTRIBUTIONS)
    assert sdists == sorted(f"{stem(n)}-{VERSION}.tar.gz" for n in USER_DISTRIBUTIONS)
    assert not [p.name for p in dist.iterdir() if "locals3" in p.name]


def test_every_built_file_has_the_one_version_and_pins_its_siblings_to_it(dist: Path) -> None:
    for path in sorted(dist.glob("*.whl")) + sorted(dist.glob("*.tar.gz")):
        metadata = email.message_from_bytes(_metadata(path))
        assert metadata["Version"] == VERSION, path.name
        assert metadata["Requires-Python"] == ">=3.10", path.name
        assert metadata["License-Expression"] == "Apache-2.0", path.name
        assert metadata.get_all("Classifier"), path.name
        assert metadata.get_all("Project-URL"), path.name
        assert metadata.get_payload().strip(), path.name  # the README, as long_description
        for text in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            if requirement.name in USER_DISTRIBUTIONS:
                assert str(requirement.specifier) == f"=={VERSION}", (path.name, text)
        umbrella_extras = metadata.get_all("Provides-Extra") or []
        if metadata["Name"] == UMBRELLA:
            assert set(umbrella_extras) == {"datasets", "checkpoint", "dcp", "lightning", "all"}


def test_every_layer_wheel_holds_its_package_and_py_typed_and_no_namespace_init(
    dist: Path,
) -> None:
    for name in USER_DISTRIBUTIONS:
        wheel = dist / f"{stem(name)}-{VERSION}-py3-none-any.whl"
        names = zipfile.ZipFile(wheel).namelist()
        code = [n for n in names if ".dist-info/" not in n]
        assert "s3torch/__init__.py" not in names, wheel.name
        if name == UMBRELLA:
            assert code == [], wheel.name
            continue
        leaf = name.removeprefix("s3torch-")
        assert f"s3torch/{leaf}/py.typed" in names, wheel.name
        assert all(n.startswith(f"s3torch/{leaf}/") for n in code), wheel.name
    for sdist in dist.glob("*.tar.gz"):
        with tarfile.open(sdist) as tar:
            assert not [n for n in tar.getnames() if n.endswith("src/s3torch/__init__.py")]


def test_check_passes_on_the_build(dist: Path) -> None:
    result = release("check", str(dist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert f"7 distributions at {VERSION}, fit to publish" in result.stderr


def _metadata(path: Path) -> bytes:
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            return archive.read(info)
    with tarfile.open(path) as tar:
        member = tar.extractfile(f"{path.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert member is not None
        return member.read()


def _rewrite_wheel(wheel: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite ``wheel`` in place with ``edit`` applied to its {name: bytes}."""
    with zipfile.ZipFile(wheel) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    edit(files)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def _edit_metadata(old: str, new: str) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        (info,) = [n for n in files if n.endswith(".dist-info/METADATA")]
        text = files[info].decode()
        assert old in text, (old, text[:2000])
        files[info] = text.replace(old, new, 1).encode()

    return edit


def _remove(name: str) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        del files[name]

    return edit


def _add(name: str) -> Callable[[dict[str, bytes]], None]:
    def edit(files: dict[str, bytes]) -> None:
        files[name] = b""

    return edit


def _drop_description(files: dict[str, bytes]) -> None:
    (info,) = [n for n in files if n.endswith(".dist-info/METADATA")]
    headers = files[info].decode().split("\n\n", 1)[0]
    files[info] = (
        headers.replace("Description-Content-Type: text/markdown\n", "") + "\n\n"
    ).encode()


def _wheel(name: str) -> str:
    return f"{stem(name)}-{VERSION}-py3-none-any.whl"


BROKEN = {
    "mismatched-pin": (
        "s3torch-readers",
        _edit_metadata(
            f"Requires-Dist: s3torch-client=={VERSION}", "Requires-Dist: s3torch-client==9.9.9"
        ),
        f"{_wheel('s3torch-readers')}: Requires-Dist: 's3torch-client==9.9.9' must pin "
        f"s3torch-client=={VERSION}",
    ),
    "unpinned-extra": (
        UMBRELLA,
        _edit_metadata(
            f"Requires-Dist: s3torch-dcp=={VERSION}; extra == 'dcp'",
            "Requires-Dist: s3torch-dcp; extra == 'dcp'",
        ),
        f"{_wheel(UMBRELLA)}: Requires-Dist: \"s3torch-dcp; extra == 'dcp'\" must pin "
        f"s3torch-dcp=={VERSION}",
    ),
    "other-version": (
        "s3torch-lightning",
        _edit_metadata(f"Version: {VERSION}\n", "Version: 9.9.9\n"),
        f"{_wheel('s3torch-lightning')}: Version: '9.9.9', expected '{VERSION}'",
    ),
    "no-requires-python": (
        "s3torch-dcp",
        _edit_metadata("Requires-Python: >=3.10\n", ""),
        f"{_wheel('s3torch-dcp')}: Requires-Python: missing",
    ),
    "no-classifiers": (
        "s3torch-datasets",
        lambda files: _edit_classifiers(files),
        f"{_wheel('s3torch-datasets')}: Classifier: missing",
    ),
    "no-py-typed": (
        "s3torch-client",
        _remove("s3torch/client/py.typed"),
        f"{_wheel('s3torch-client')}: py.typed: s3torch/client/py.typed is missing",
    ),
    "namespace-init": (
        "s3torch-checkpoint",
        _add("s3torch/__init__.py"),
        f"{_wheel('s3torch-checkpoint')}: contents: s3torch/__init__.py: s3torch is a PEP 420",
    ),
    "another-layer": (
        "s3torch-dcp",
        _add("s3torch/readers/extra.py"),
        f"{_wheel('s3torch-dcp')}: contents: ['s3torch/readers/extra.py'] outside s3torch/dcp/",
    ),
    "no-description": (
        UMBRELLA,
        _drop_description,
        f"{_wheel(UMBRELLA)}: Description: missing",
    ),
}


def _edit_classifiers(files: dict[str, bytes]) -> None:
    (info,) = [n for n in files if n.endswith(".dist-info/METADATA")]
    lines = files[info].decode().split("\n")
    files[info] = "\n".join(line for line in lines if not line.startswith("Classifier:")).encode()


@pytest.mark.parametrize("case", BROKEN)
def test_check_fails_naming_the_file_and_the_field(broken: Path, case: str) -> None:
    name, edit, expected = BROKEN[case]
    _rewrite_wheel(broken / _wheel(name), edit)
    result = release("check", str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout
    # Only the broken file is named (twine's verdict on it included).
    named = {line.split(": ", 1)[0] for line in result.stdout.splitlines() if ": " in line}
    assert named <= {_wheel(name), "twine"}, result.stdout


def test_twine_check_strict_fails_a_wheel_without_a_description(broken: Path) -> None:
    _rewrite_wheel(broken / _wheel(UMBRELLA), _drop_description)
    result = release("check", str(broken))
    assert (
        f"{_wheel(UMBRELLA)}: twine check --strict: WARNING `long_description` missing."
        in result.stdout.splitlines()
    ), result.stdout


def test_check_fails_when_locals3_is_among_the_files(broken: Path) -> None:
    built = subprocess.run(
        ["uv", "build", "--package", DEV_ONLY, "--wheel", "-q", "-o", str(broken)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = broken.glob(f"{stem(DEV_ONLY)}-*.whl")
    result = release("check", str(broken))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{wheel.name}: distribution: {DEV_ONLY} is dev-only: never published"
    ]


def test_check_fails_on_a_missing_file_and_a_stray_version(broken: Path) -> None:
    (broken / f"{stem('s3torch-readers')}-{VERSION}.tar.gz").rename(
        broken / f"{stem('s3torch-readers')}-0.0.1.tar.gz"
    )
    result = release("check", str(broken))
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == [
        f"s3torch_readers-0.0.1.tar.gz: file: not a user distribution at version {VERSION}",
        f"s3torch_readers-{VERSION}.tar.gz: file: missing (tools/release.py build makes it)",
    ]


def test_check_against_another_version_fails_every_file(dist: Path) -> None:
    result = release("check", str(dist), "--version", "9.9.9")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len([line for line in lines if ": file: missing" in line]) == 14
    assert len([line for line in lines if "not a user distribution at version 9.9.9" in line]) == 14


def test_build_leaves_locals3_out_though_it_is_a_workspace_member() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "tools/locals3" in root["tool"]["uv"]["workspace"]["members"]
    locals3 = tomllib.loads((REPO / "tools/locals3/pyproject.toml").read_text())["project"]
    assert locals3["name"] == DEV_ONLY
    assert "Private :: Do Not Upload" in locals3["classifiers"]  # PyPI refuses the upload
    assert "dev-only, never published" in locals3["description"]


def test_stage_lays_the_files_out_in_dependency_order(dist: Path, tmp_path: Path) -> None:
    result = release("stage", str(dist), str(tmp_path / "staged"))
    assert result.returncode == 0, result.stderr
    levels = [sorted(p.name for p in (tmp_path / "staged" / str(n)).iterdir()) for n in range(1, 6)]
    expected = [
        ["s3torch-client"],
        ["s3torch-readers"],
        ["s3torch-checkpoint", "s3torch-datasets", "s3torch-dcp"],
        ["s3torch-lightning"],
        [UMBRELLA],
    ]
    assert levels == [
        sorted(f(n) for n in names for f in (_wheel, lambda n: f"{stem(n)}-{VERSION}.tar.gz"))
        for names in expected
    ]
    assert sorted(p.name for p in (tmp_path / "staged").iterdir()) == ["1", "2", "3", "4", "5"]
    # Every level only needs the levels before it.
    placed = {name: i for i, names in enumerate(expected) for name in names}
    for name, level in placed.items():
        project = PROJECTS[name]
        needs = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            needs += extra
        for requirement in needs:
            other = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
            if other in placed and other != name:
                assert placed[other] < level, (name, other)


def _workspace_copy(tmp_path: Path) -> Path:
    """The workspace's pyproject files and package folders (no tests), in ``tmp_path``."""
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "packages", copy / "packages", ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    (copy / "tools/locals3").mkdir(parents=True)
    shutil.copy(REPO / "tools/locals3/pyproject.toml", copy / "tools/locals3/pyproject.toml")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_version_sets_one_version_in_every_pyproject_and_pin(tmp_path: Path) -> None:
    copy = _workspace_copy(tmp_path)
    result = release("--repo", str(copy), "version", "0.2.0rc1", "--no-lock")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 9  # seven packages, the root, locals3
    for path in [*copy.glob("packages/*/pyproject.toml"), copy / "pyproject.toml"]:
        before = (REPO / path.relative_to(copy)).read_text()
        after = path.read_text()
        project = tomllib.loads(after)["project"]
        assert project["version"] == "0.2.0rc1", path
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for requirement in requirements:
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
            if name in USER_DISTRIBUTIONS:
                assert requirement.endswith("==0.2.0rc1"), (path, requirement)
        # Nothing else changed: other pins (awscrt>=0.38.1,<0.39), comments, layout.
        assert after.replace("0.2.0rc1", VERSION) == before, path
    locals3 = tomllib.loads((copy / "tools/locals3/pyproject.toml").read_text())["project"]
    assert locals3["version"] == "0.2.0rc1"
    shown = release("--repo", str(copy), "show-version")
    assert shown.stdout == "0.2.0rc1\n"


@pytest.mark.parametrize("bad", ["v0.2.0", "0.2.0.dev1", "0.2.0+local", "two"])
def test_version_refuses_what_is_not_a_plain_release(tmp_path: Path, bad: str) -> None:
    copy = _workspace_copy(tmp_path)
    result = release("--repo", str(copy), "version", bad, "--no-lock")
    assert result.returncode == 2
    assert repr(bad) in result.stderr
    assert tomllib.loads((copy / "pyproject.toml").read_text())["project"]["version"] == VERSION


def test_show_version_fails_naming_the_distributions_that_disagree(tmp_path: Path) -> None:
    copy = _workspace_copy(tmp_path)
    path = copy / "packages/s3torch-dcp/pyproject.toml"
    path.write_text(path.read_text().replace(f'version = "{VERSION}"', 'version = "9.9.9"', 1))
    result = release("--repo", str(copy), "show-version")
    assert result.returncode == 2
    assert "disagree" in result.stderr
    assert "'s3torch-dcp': '9.9.9'" in result.stderr


# --- the workflows ---------------------------------------------------------------------------


def _workflow(name: str) -> dict[Any, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(document, dict)
    # YAML 1.1 reads the key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


RUN_PREFIX = "uv run --locked --only-group release python "


def test_release_workflow_triggers_and_jobs() -> None:
    workflow = _workflow("release.yml")
    assert workflow["on"]["push"] == {"tags": ["v*"]}
    dry_run = workflow["on"]["workflow_dispatch"]["inputs"]["dry_run"]
    assert (dry_run["type"], dry_run["default"]) == ("boolean", True)
    build, publish = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    uses = [step.get("uses", "") for step in build["steps"]]
    assert uses[0].startswith("actions/checkout@")
    assert uses[1].startswith("astral-sh/setup-uv@")
    runs = [step["run"] for step in build["steps"] if "run" in step]
    commands = [line.strip() for run in runs for line in run.splitlines() if RUN_PREFIX in line]
    assert [c.split(RUN_PREFIX, 1)[1] for c in commands if "show-version" not in c] == [
        "tools/release.py build",
        "tools/release.py check dist",
        "tools/release.py stage dist staged",
    ]
    uploads = {
        s["with"]["name"]: s["with"]["path"]
        for s in build["steps"]
        if "upload" in s.get("uses", "")
    }
    assert uploads == {"dist": "dist/", "staged": "staged/"}
    assert publish["needs"] == "build"
    assert publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    assert "startsWith(github.ref, 'refs/tags/v')" in publish["if"]
    assert "inputs.dry_run == false" in publish["if"]
    assert workflow["permissions"] == {"contents": "read"}  # id-token only where it publishes


def test_release_workflow_publishes_every_staged_level_in_order(dist: Path, tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    assert release("stage", str(dist), str(staged)).returncode == 0
    steps = _workflow("release.yml")["jobs"]["publish"]["steps"]
    assert steps[0]["uses"].startswith("actions/download-artifact@")
    assert steps[0]["with"] == {"name": "staged", "path": "staged/"}
    publishes = [s for s in steps if s.get("uses") == "pypa/gh-action-pypi-publish@release/v1"]
    assert len(publishes) == len(steps) - 1
    levels = sorted(staged.iterdir(), key=lambda p: int(p.name))
    assert [s["with"]["packages-dir"] for s in publishes] == [f"staged/{p.name}/" for p in levels]
    for step, level in zip(publishes, levels, strict=True):
        assert step["with"]["skip-existing"] is True
        names = sorted({p.name.split("-")[0].replace("_", "-") for p in level.iterdir()})
        assert step["name"].endswith(f"({', '.join(names)})"), step["name"]


def test_release_workflow_tag_check_passes_the_right_tag_only(tmp_path: Path) -> None:
    """The tag step's own script, run with uv in a venv of its own (the release group only)."""
    build = _workflow("release.yml")["jobs"]["build"]
    (step,) = [s for s in build["steps"] if "show-version" in s.get("run", "")]
    assert step["if"] == "startsWith(github.ref, 'refs/tags/')"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    outcomes = {}
    for tag in (f"v{VERSION}", "v9.9.9"):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step["run"]],
            cwd=REPO,
            env={**env, "GITHUB_REF_NAME": tag},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        outcomes[tag] = (result.returncode, result.stdout)
    assert outcomes[f"v{VERSION}"] == (0, "")
    assert outcomes["v9.9.9"][0] == 1
    assert f"tag v9.9.9 but packages/* are at {VERSION}" in outcomes["v9.9.9"][1]


def test_the_commands_the_workflows_run_exist() -> None:
    for sub in ("build", "check", "stage", "show-version", "version"):
        result = release(sub, "--help")
        assert result.returncode == 0, (sub, result.stderr)
    ci = _workflow("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    (job,) = ci["jobs"].values()
    assert job["steps"][0]["uses"].startswith("actions/checkout@")
    assert [s["run"] for s in job["steps"] if "run" in s] == [".ci/run"]
    ci_run = REPO / ".ci" / "run"
    assert ci_run.stat().st_mode & stat.S_IXUSR
    assert "tools/check.sh" in ci_run.read_text()
    assert (REPO / "tools" / "check.sh").stat().st_mode & stat.S_IXUSR
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    release_group = root["dependency-groups"]["release"]
    assert {re.split(r"[\[<>=]", r, maxsplit=1)[0] for r in release_group} == {
        "twine",
        "readme-renderer",
        "packaging",
    }
    assert {"include-group": "release"} in root["dependency-groups"]["dev"]
