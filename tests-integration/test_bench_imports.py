"""Each module of the benchmark package imports first, alone, in a fresh interpreter.

The bench scripts and their subprocesses import single modules
(``s3bench.checkpoint_cases``, ``s3bench.dcp_state``, ...) first: an import
cycle between the case modules breaks exactly the one imported first, which
a test importing the package whole never sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench"
MODULES = sorted(path.stem for path in (BENCH / "s3bench").glob("*.py"))


def test_the_bench_package_has_its_modules() -> None:
    assert {"__init__", "case", "cases", "data_cases", "dcp_cases", "worker"} <= set(MODULES)
    assert {"job_cli", "job_rank", "job_report", "job_run"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_bench_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    name = "s3bench" if module == "__init__" else f"s3bench.{module}"
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"import {name} failed:\n{result.stderr}"


def test_every_case_is_gathered_once_in_table_order() -> None:
    script = (
        "from s3bench.cases import CASES\n"
        "from s3bench.data_cases import DATA_CASES\n"
        "from s3bench.checkpoint_cases import CHECKPOINT_CASES\n"
        "from s3bench.dcp_cases import DCP_CASES\n"
        "from s3bench.lightning_cases import LIGHTNING_CASES\n"
        "parts = [DATA_CASES, CHECKPOINT_CASES, DCP_CASES, LIGHTNING_CASES]\n"
        "assert list(CASES) == [name for part in parts for name in part], list(CASES)\n"
        "assert all(CASES[name].name == name for name in CASES)\n"
        "print(len(CASES), ','.join(CASES))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    count, names = result.stdout.split()
    assert int(count) == 20
    assert names.split(",")[:2] == ["get_big", "put_big"]
    assert {"checkpoint_save", "dcp_load", "lightning_sync"} <= set(names.split(","))
