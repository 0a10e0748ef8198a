"""Ctrl-C (a real SIGINT) while Lightning saves a checkpoint through the plugin, sync and async.

Lightning catches the KeyboardInterrupt in ``fit``: it logs "Detected
KeyboardInterrupt, attempting graceful shutdown ...", ignores SIGINT from
then on, tears the trainer down (``S3AsyncCheckpointIO`` waits for its saves
there) and raises ``SystemExit(1)``. Each case runs ``interrupt_job.py`` and
signals it at a known moment of its first checkpoint: while ``torch.save``
pickles, while a part's answer is delayed, and while the completion's answer
is delayed (the object may then be complete on the server already).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from locals3 import Fault, FaultProxy, RequestKind

JOB = Path(__file__).with_name("interrupt_job.py")
TIMEOUT_S = 300

# The moment, and the request whose delayed answer the test waits for before its SIGINT.
MOMENTS: dict[str, tuple[RequestKind, int] | None] = {
    "pickling": None,  # the job signals itself from inside torch.save
    "part-in-flight": (RequestKind.UPLOAD_PART, 5),
    "completing": (RequestKind.COMPLETE_MULTIPART, 1),
}


def _signal_when_seen(child: subprocess.Popen[str], proxy: FaultProxy, kind: RequestKind) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not any(request.kind == kind for request in proxy.seen):
        assert child.poll() is None, "the job ended before the moment to interrupt it"
        assert time.monotonic() < deadline, f"no {kind.value} request came"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGINT)


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ctrl_c_during_a_save_exits_as_lightning_does_and_leaves_only_whole_checkpoints(
    fault_proxy: FaultProxy,
    s3_region: str,
    bucket: str,
    boto3_s3: Any,
    tmp_path: Path,
    mode: str,
    moment: str,
) -> None:
    delayed = MOMENTS[moment]
    if delayed is not None:
        kind, times = delayed
        fault_proxy.inject(Fault.first_byte_delay(3.0), kinds=kind, times=times)
    report = tmp_path / "report.json"
    command = [sys.executable, str(JOB), fault_proxy.endpoint, s3_region]
    command += [f"s3://{bucket}/ckpts", mode, moment, str(report)]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    try:
        if delayed is not None:
            _signal_when_seen(child, fault_proxy, delayed[0])
        output, _ = child.communicate(timeout=TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    # What the user sees: Lightning's message, SystemExit(1), no other error, no death by signal.
    assert child.returncode == 1, output[-10000:]
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in output
    assert "Traceback" not in output, output[-10000:]
    assert "garbage-collected without close()" not in output
    outcome = json.loads(report.read_text())
    assert (outcome["code"], outcome["while_handling"]) == (1, "KeyboardInterrupt")
    assert not outcome["sigint_ignored"]  # ignored while Lightning shut down, then restored
    if mode == "sync":  # the interrupt reached the save itself
        assert any("serialization.py:save" in frame for frame in outcome["raised_in"]), outcome

    # Nothing half-written: every checkpoint there loads whole; no upload is left open.
    listed = boto3_s3.list_objects_v2(Bucket=bucket, Prefix="ckpts/").get("Contents", [])
    keys = [item["Key"] for item in listed]
    for key in keys:
        body = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        loaded = torch.load(io.BytesIO(body), weights_only=False)  # our own file
        assert loaded["state_dict"]["weights"].numel() == 8 * 1024 * 1024, key
    assert boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    first = "ckpts/epoch=0-step=1.ckpt"
    if mode == "async":
        assert first in keys  # the shutdown waited for the saves handed over
    elif moment != "completing":
        assert keys == []  # the interrupted save was aborted, and training stopped
