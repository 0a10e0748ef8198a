"""tools/soak.py in its tiny mode: mixed load behind the fault proxy, every byte verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_a_short_soak_verifies_every_byte_and_leaves_no_upload(repo: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "tools/soak.py"),
            "--quick",
            "--seconds",
            "20",
            "--fault-scale",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["operations"] > 0
    kinds = {"write", "read", "read_range", "list", "delete", "checkpoint", "dcp"}
    assert set(summary["operations_by_kind"]) == kinds
    assert summary["bytes_verified"] > 0
    assert summary["wrong_bytes"] == 0
    assert summary["wrong_reads"] == 0
    assert summary["lost_objects"] == 0
    assert summary["open_multipart_uploads"] == []
    assert summary["faults_injected_total"] > 0  # the proxy did play faults
    assert summary["failed_workers"] == []
    assert all(peak > 0 for peak in summary["peak_rss_mib"])
    assert len(summary["peak_open_fds"]) == 2
    assert (tmp_path / "soak.svg").read_text().startswith("<svg")
    assert "[" in result.stdout  # progress lines
    assert "soak: OK" in result.stdout


def test_the_soak_fails_on_a_wrong_byte(repo: Path, tmp_path: Path) -> None:
    """Flipped bytes where no checksum covers them (moto, ranged reads) reach the reader: caught."""
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "tools/soak.py"),
            "--seconds",
            "10",
            "--server",
            "moto",
            "--processes",
            "1",
            "--threads",
            "4",
            "--flip-unvalidated",
            "--fault-scale",
            "10",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert summary["ok"] is False
    assert summary["wrong_bytes"] > 0
    assert summary["faults_injected"]["flipped byte (any GET)"] > 0
    assert any(problem.startswith("WRONG s3://") for problem in summary["problems"])
    assert "soak: FAILED" in result.stdout
