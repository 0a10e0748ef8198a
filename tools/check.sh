#!/usr/bin/env bash
# Every check CI runs, in one command: lint, format, types, layer contracts, tests.
# Extra arguments go to pytest, e.g. `tools/check.sh -k writer -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

uv sync --locked
uv run ruff check
uv run ruff format --check
uv run mypy
uv run lint-imports
uv run python -m pytest "$@"
