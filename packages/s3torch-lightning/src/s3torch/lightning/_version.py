"""The installed version of s3torch-lightning (one lockstep version for all packages)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s3torch-lightning")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"
