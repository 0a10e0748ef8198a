"""Every strategy Lightning offers on CPU, with the plugin, in processes launched as Lightning does.

Each case runs ``fit_job.py`` in a fresh interpreter (a spawn launcher needs a
``__main__`` it can import; ``ddp`` re-runs the script for its other rank)
with a bounded time, then checks from here what reached the server.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from s3torch.lightning import S3LightningCheckpoint

JOB = Path(__file__).with_name("fit_job.py")
TIMEOUT_S = 420

# Lightning's CPU strategies: one device (auto picks SingleDeviceStrategy), and DDP
# under each of its launchers (popen: the script again; spawn: the trainer
# pickled; fork). ddp_notebook is the fork launcher again; the
# find_unused_parameters variants change nothing for checkpoints. FSDP and
# DeepSpeed need a GPU, XLA a TPU.
STRATEGIES = [
    pytest.param("auto", 1, False, id="auto-sync"),
    pytest.param("auto", 1, True, id="auto-async"),
    pytest.param("ddp", 2, False, id="ddp-sync"),
    pytest.param("ddp", 2, True, id="ddp-async"),
    pytest.param("ddp_spawn", 2, False, id="ddp_spawn-sync"),
    pytest.param("ddp_spawn", 2, True, id="ddp_spawn-async"),
    pytest.param("ddp_fork", 2, False, id="ddp_fork-sync"),
    pytest.param("ddp_notebook", 2, True, id="ddp_notebook-async"),
]


def test_fork_exists_here() -> None:
    """ddp_fork (and ddp_notebook, the same launcher) need the fork start method."""
    assert "fork" in multiprocessing.get_all_start_methods()


@pytest.mark.parametrize(("strategy", "devices", "asynchronous"), STRATEGIES)
def test_fit_checkpoints_to_s3_and_loads_back(
    plugin: S3LightningCheckpoint,
    s3_endpoint: str,
    s3_region: str,
    bucket: str,
    list_keys: Any,
    tmp_path: Path,
    strategy: str,
    devices: int,
    asynchronous: bool,
) -> None:
    output = tmp_path / "main.json"
    root = f"s3://{bucket}/run"
    command = [sys.executable, str(JOB), strategy, str(devices), s3_endpoint, s3_region, root]
    command += [str(output), *(["async"] if asynchronous else [])]
    temporary = tmp_path / "tmp"  # where the spawn launchers' weights file goes
    temporary.mkdir()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(temporary)},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-10000:]

    checkpoints = "run/lightning_logs/version_0/checkpoints"
    assert list_keys(checkpoints) == [
        f"{checkpoints}/epoch=0-step=3.ckpt",
        f"{checkpoints}/epoch=0-step=4.ckpt",
        f"{checkpoints}/last.ckpt",
    ]
    assert "run/lightning_logs/version_0/metrics.csv" in list_keys("run/")
    last = plugin.load_checkpoint(f"s3://{bucket}/{checkpoints}/last.ckpt")
    assert last["global_step"] == 4

    main = json.loads(output.read_text())
    for name, tensor in last["state_dict"].items():  # the weights the main process ended with
        assert torch.equal(torch.tensor(main["weights"][name]), tensor), name
    ranks = [json.loads((tmp_path / f"main.json.rank{r}.json").read_text()) for r in range(devices)]
    assert [rank["fsspec_endpoint"] for rank in ranks] == [s3_endpoint] * devices
    if strategy in ("ddp_spawn", "ddp_fork", "ddp_notebook"):  # ranks in processes of their own
        assert main["pid"] not in {rank["pid"] for rank in ranks}
    assert not list(temporary.rglob("*.ckpt"))  # the weights' temporary file was removed
