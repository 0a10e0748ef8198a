"""Set one version in every distribution of the workspace, and in every pin between them."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import InvalidVersion, Version

from releaselib.projects import (
    PACKAGES,
    REPO,
    ReleaseError,
    load_projects,
    read_pyproject,
    workspace_version,
)

LOCKSTEP = ("pyproject.toml", "tools/locals3/pyproject.toml")
"""Files outside ``packages/`` that carry the same version (the workspace's rule: one version
for every member and the root), though they are never published."""

_VERSION_LINE = re.compile(r'^(version\s*=\s*)"[^"]*"', re.M)


def set_version(version: str, repo: Path = REPO) -> list[Path]:
    """Write ``version`` into every ``pyproject.toml`` of the workspace and every sibling pin.

    Edits the text (comments and layout stay); raises ReleaseError for a version
    that is not a plain public PEP 440 release (``1.2.3``, ``1.2.3rc1``, ...) and
    when a file does not read back as expected. Returns the files changed.
    """
    try:
        parsed = Version(version)
    except InvalidVersion as error:
        raise ReleaseError(f"{version!r} is not a PEP 440 version") from error
    if str(parsed) != version or parsed.local is not None or parsed.dev is not None:
        raise ReleaseError(f"{version!r}: write a normalized public release, e.g. {parsed.public}")
    names = [p.name for p in load_projects(repo)]
    pin = re.compile(
        r"(?<![\w.-])(?P<name>"
        + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        + r")(?P<extras>\[[^\]]*\])?"
        r"\s*==\s*[^\s\",;]+"
    )
    changed = []
    files = sorted((repo / PACKAGES).glob("*/pyproject.toml")) + [repo / f for f in LOCKSTEP]
    for path in files:
        text = path.read_text()
        new, count = _VERSION_LINE.subn(rf'\g<1>"{version}"', text, count=1)
        if count != 1:
            raise ReleaseError(f'{path}: no `version = "..."` line')
        if path.parent.parent == repo / PACKAGES:
            new = pin.sub(rf"\g<name>\g<extras>=={version}", new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    for path in files:
        if read_pyproject(path)["project"]["version"] != version:
            raise ReleaseError(f"{path}: the version did not change to {version}")
    if workspace_version(load_projects(repo)) != version:  # pragma: no cover: checked above
        raise ReleaseError(f"the distributions are not all at {version}")
    return changed
