"""atomic_overwrite=True: a save SIGKILLed at any moment leaves the old checkpoint or the new one.

Each kill case runs kill_job.py in a subprocess, which pauses at the chosen
moment of its save and is then killed with a real SIGKILL; the location must
then load, bit for bit, as the old checkpoint or as the new one, and the
next save must leave only the files its own ``.metadata`` names.
"""

from __future__ import annotations

import pathlib
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.planner import WriteItem

from s3torch.dcp import S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

JOB = pathlib.Path(__file__).with_name("kill_job.py")
sys.path.insert(0, str(JOB.parent))
from kill_job import state  # noqa: E402


def objects(boto3_s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (key relative to it) and its bytes, via boto3."""
    found: dict[str, bytes] = {}
    for page in boto3_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = boto3_s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = body
    return found


def named_files(metadata: bytes) -> set[str]:
    return {info.relative_path for info in pickle.loads(metadata).storage_data.values()}


def load(options: dict[str, Any], uri: str) -> dict[str, torch.Tensor]:
    loaded = state(0.0)
    dcp.load(loaded, storage_reader=S3StorageReader(path=uri, **options))
    return loaded


def assert_state(loaded: dict[str, torch.Tensor], fill: float) -> None:
    for name, tensor in state(fill).items():
        assert torch.equal(loaded[name], tensor), name


@pytest.fixture
def killed_save(s3_endpoint: str) -> Iterator[Callable[[str, str], None]]:
    """``killed_save(moment, uri)``: run kill_job.py until it is at ``moment``, then SIGKILL it."""
    processes: list[subprocess.Popen[str]] = []

    def run(moment: str, uri: str) -> None:
        process = subprocess.Popen(
            [sys.executable, str(JOB), moment, s3_endpoint, uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # the job sleeps after it; bounded by its 120 s
        assert line == f"AT {moment}", (line, process.stderr.read() if process.stderr else "")
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL

    yield run
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize(
    ("moment", "survivor"), [("files", 1.0), ("metadata", 1.0), ("cleanup", 2.0)]
)
@pytest.mark.parametrize("old_layout", ["fixed", "atomic"])
def test_a_killed_save_leaves_a_whole_checkpoint(
    options: dict[str, Any],
    bucket: str,
    boto3_s3: Any,
    checkpoint_uri: str,
    killed_save: Callable[[str, str], None],
    open_uploads: Callable[[], list[str]],
    moment: str,
    survivor: float,
    old_layout: str,
) -> None:
    prefix = "ckpt/step-1/"
    old_writer = S3StorageWriter(
        path=checkpoint_uri,
        single_file_per_rank=False,
        atomic_overwrite=old_layout == "atomic",
        **options,
    )
    dcp.save(state(1.0), storage_writer=old_writer)
    before = objects(boto3_s3, bucket, prefix)
    assert len(before) == 5  # .metadata and one file per item

    killed_save(moment, checkpoint_uri)

    after = objects(boto3_s3, bucket, prefix)
    assert_state(load(options, checkpoint_uri), survivor)
    assert open_uploads() == []  # one file at a time: the kill came between uploads
    if survivor == 1.0:  # the old checkpoint, bit for bit, and its .metadata still names it
        assert {key: after[key] for key in before} == before
        new_files = set(after) - set(before)
        assert len(new_files) == (2 if moment == "files" else 4)
        assert named_files(after[".metadata"]) == set(before) - {".metadata"}
    else:  # the new checkpoint is published; the old files are still there, unnamed
        assert after[".metadata"] != before[".metadata"]
        assert set(before) - {".metadata"} <= set(after)
        assert named_files(after[".metadata"]).isdisjoint(before)

    # The next save removes whatever no .metadata names: the killed save's files too.
    dcp.save(
        state(3.0),
        storage_writer=S3StorageWriter(
            path=checkpoint_uri, single_file_per_rank=False, atomic_overwrite=True, **options
        ),
    )
    final = objects(boto3_s3, bucket, prefix)
    assert set(final) == named_files(final[".metadata"]) | {".metadata"}
    assert len(final) == 5
    assert_state(load(options, checkpoint_uri), 3.0)


def test_a_completed_save_replaces_the_old_files(
    options: dict[str, Any],
    bucket: str,
    boto3_s3: Any,
    checkpoint_uri: str,
    killed_save: Callable[[str, str], None],
) -> None:
    dcp.save(state(1.0), storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    process = subprocess.run(
        [sys.executable, str(JOB), "none", options["endpoint"], checkpoint_uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.stdout.strip() == "DONE", process.stderr
    final = objects(boto3_s3, bucket, "ckpt/step-1/")
    names = named_files(final[".metadata"])
    assert set(final) == names | {".metadata"}
    assert all(name.startswith("__0_") and len(name) == len("__0_0-") + 16 + 7 for name in names)
    assert_state(load(options, checkpoint_uri), 2.0)


def test_torch_and_the_reference_load_an_atomic_checkpoint(
    options: dict[str, Any],
    s3_region: str,
    s3_endpoint: str,
    bucket: str,
    boto3_s3: Any,
    checkpoint_uri: str,
    tmp_path: pathlib.Path,
) -> None:
    reference = pytest.importorskip("s3torchconnector.dcp")
    from s3torchconnector._s3client import S3Client, S3ClientConfig

    for fill in (1.0, 2.0):  # the second replaces the first
        writer = S3StorageWriter(
            path=checkpoint_uri, thread_count=2, atomic_overwrite=True, **options
        )
        dcp.save(state(fill), storage_writer=writer)
    stored = objects(boto3_s3, bucket, "ckpt/step-1/")
    assert len(stored) == 3
    assert all("-" in name for name in stored if name != ".metadata")
    for name, body in stored.items():
        (tmp_path / name).write_bytes(body)
    loaded = state(0.0)
    dcp.load(loaded, storage_reader=FileSystemReader(str(tmp_path)))
    assert_state(loaded, 2.0)

    theirs = reference.S3StorageReader(s3_region, checkpoint_uri)
    theirs.fs = reference.S3FileSystem(
        s3_region,
        s3_client=S3Client(
            s3_region,
            endpoint=s3_endpoint,
            s3client_config=S3ClientConfig(force_path_style=True),
        ),
        reader_constructor=theirs._reader_constructor,
    )
    loaded = state(0.0)
    dcp.load(loaded, storage_reader=theirs)
    assert_state(loaded, 2.0)


def test_a_failed_save_keeps_the_old_checkpoint(
    options: dict[str, Any], bucket: str, boto3_s3: Any, checkpoint_uri: str
) -> None:
    dcp.save(state(1.0), storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    before = objects(boto3_s3, bucket, "ckpt/step-1/")

    class FailingPlanner(DefaultSavePlanner):
        def resolve_data(self, write_item: WriteItem) -> Any:
            if write_item.index.fqn == "layer2":  # after two files are complete
                raise ValueError("no data for layer2")
            return super().resolve_data(write_item)

    with pytest.raises(BaseException, match="no data for layer2"):
        dcp.save(
            state(2.0),
            storage_writer=S3StorageWriter(
                path=checkpoint_uri, single_file_per_rank=False, atomic_overwrite=True, **options
            ),
            planner=FailingPlanner(),
        )
    assert objects(boto3_s3, bucket, "ckpt/step-1/") == before
    assert_state(load(options, checkpoint_uri), 1.0)


def test_atomic_overwrite_must_be_a_bool(options: dict[str, Any], checkpoint_uri: str) -> None:
    with pytest.raises(TypeError, match="atomic_overwrite must be a bool"):
        S3StorageWriter(path=checkpoint_uri, atomic_overwrite="yes", **options)  # type: ignore[arg-type]
