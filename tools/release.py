"""Build, check, version and stage the s3torch distributions for a release.

The user distributions are the seven of ``packages/`` (``s3torch-client``,
``-readers``, ``-datasets``, ``-checkpoint``, ``-dcp``, ``-lightning`` and the
``s3torch`` umbrella); ``tools/locals3`` is dev-only and never built here.

    uv run python tools/release.py build              # sdists and wheels into dist/
    uv run python tools/release.py check              # twine check --strict, metadata, contents
    uv run python tools/release.py version 0.2.0      # one version in every pyproject and pin
    uv run python tools/release.py show-version       # the version packages/* share
    uv run python tools/release.py stage dist staged  # staged/1/ ... in publishing order

``check`` exits 1 and prints one line per problem, ``FILE: FIELD: what``;
every command exits 2 on a usage or workspace error. The release workflow
(.github/workflows/release.yml) runs ``show-version``, ``build``, ``check`` and
``stage``; ``docs/development.md`` ("Releasing") has the whole procedure.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from releaselib.projects import (  # noqa: E402
    REPO,
    ReleaseError,
    load_projects,
    workspace_version,
)

logger = logging.getLogger("release")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="release: %(message)s", stream=sys.stderr)
    try:
        return int(args.run(args))
    except ReleaseError as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    from releaselib.build import build

    projects = load_projects(args.repo)
    version = workspace_version(projects)
    files = build(projects, args.out or args.repo / "dist", args.repo)
    for path in files:
        print(path)
    logger.info("built %d files of %d distributions at %s", len(files), len(projects), version)
    return 0


def _check(args: argparse.Namespace) -> int:
    from releaselib.check import check

    projects = load_projects(args.repo)
    version = args.version or workspace_version(projects)
    dist = args.dist or args.repo / "dist"
    problems = check(dist, projects, version)
    for problem in problems:
        print(problem)
    if problems:
        logger.error("%d problems in %s", len(problems), dist)
        return 1
    logger.info("%s: %d distributions at %s, fit to publish", dist, len(projects), version)
    return 0


def _version(args: argparse.Namespace) -> int:
    from releaselib.version import set_version

    for path in set_version(args.version, args.repo):
        print(path.relative_to(args.repo))
    if args.lock:
        subprocess.run(["uv", "lock"], cwd=args.repo, check=True)
    return 0


def _show_version(args: argparse.Namespace) -> int:
    print(workspace_version(load_projects(args.repo)))
    return 0


def _stage(args: argparse.Namespace) -> int:
    from releaselib.stage import stage

    projects = load_projects(args.repo)
    version = args.version or workspace_version(projects)
    for folder in stage(args.dist, args.out, projects, version):
        print(folder, *sorted(p.name for p in folder.iterdir()))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/release.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="the workspace root (default: this checkout)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build every user sdist and wheel")
    build.add_argument("--out", type=Path, help="output folder (default: dist/)")
    build.set_defaults(run=_build)

    check = commands.add_parser("check", help="verify the built files before publishing")
    check.add_argument("dist", type=Path, nargs="?", help="default: dist/")
    check.add_argument("--version", help="the version expected (default: packages/*)")
    check.set_defaults(run=_check)

    version = commands.add_parser("version", help="set one version everywhere")
    version.add_argument("version", help="e.g. 0.2.0 or 0.2.0rc1")
    version.add_argument(
        "--no-lock", dest="lock", action="store_false", help="do not run `uv lock` afterwards"
    )
    version.set_defaults(run=_version)

    show = commands.add_parser("show-version", help="print the version packages/* share")
    show.set_defaults(run=_show_version)

    stage = commands.add_parser("stage", help="copy dist/ into one folder per publishing level")
    stage.add_argument("dist", type=Path)
    stage.add_argument("out", type=Path, help="a folder that does not exist yet")
    stage.add_argument("--version", help="the version expected (default: packages/*)")
    stage.set_defaults(run=_stage)
    return parser


if __name__ == "__main__":
    sys.exit(main())
