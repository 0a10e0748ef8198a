"""The README's first command: the demo runs end to end on an embedded server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_writes_reads_verifies_and_cleans_up(repo: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "tools/demo.py"),
            "--server",
            "moto",
            "--small-objects",
            "40",
            "--small-kib",
            "64",
            "--large-mib",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr, result.stderr  # torch's NumPy warning, for one
    lines = result.stdout.splitlines()
    assert lines[0] == "s3torch demo: loading torch and s3torch"  # before torch's import
    assert lines[1] == "s3torch demo: starting moto's S3 server on 127.0.0.1"  # said at once
    assert lines[2].startswith("s3torch demo against http://127.0.0.1:")
    steps = [line.split("  ")[1] if line.startswith("  ") else line for line in lines]
    assert any("upload 40 x 64 KiB" in line for line in steps)
    assert any("read back 1 x 12 MiB" in line for line in steps)
    assert any("DataLoader, iterable dataset, 2 workers" in line for line in steps)
    assert any("DataLoader, map dataset, 2 workers" in line for line in steps)
    assert "every byte verified (SHA-256, tensor equality after the DataLoader" in result.stdout
    assert "train from S3IterableDataset, 20 steps" in result.stdout
    assert "20/20" in result.stdout
    assert "samples/s" in result.stdout
    assert any("checkpoint: S3Checkpoint, save + load" in line for line in steps)
    assert any("checkpoint: DCP, save + load" in line for line in steps)
    assert any("checkpoint: Lightning, 2 steps, resume, 2 more" in line for line in steps)
    assert "every checkpoint loaded back equal to the model it saved" in result.stdout
    assert lines[-1] == "done"
