"""With every retry spent, each layer fails with its typed error and leaves nothing behind.

The fault proxy answers every request of one kind with the same fault and the
clients make ``max_attempts=2``. Each layer is driven through the call a user
makes (``S3Writer.write``, a reader's ``read``, a DataLoader, ``torch.save`` /
``torch.load``, ``dcp.save`` / ``dcp.load``, ``Trainer.fit``) and must raise
the error its guide's Errors section names, with the operation, bucket and
key. Afterwards: no object at the target key, no ``.metadata`` for DCP, no
open multipart upload, and no thread, file descriptor or child process that
was not there before (see :class:`Leaks`).
"""

from __future__ import annotations

import gc
import io
import os
import pathlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.checkpoint import S3Checkpoint
from s3torch.client import (
    S3Client,
    S3ClientConfig,
    S3Exception,
    S3ThrottlingError,
    S3TransportError,
)
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

MiB = 1024 * 1024
PART = 5 * MiB
PACKAGES = pathlib.Path(__file__).resolve().parent.parent / "packages"
SETTLE_SECONDS = 15.0  # threads and connections of a closed client end within this
FD_TOLERANCE = 1
"""File descriptors a test may leave open beyond those it started with.

Measured here: 0 in every test (once a test's clients are closed and their
connections have ended). The 1 allows for one descriptor that a library opens
lazily, once per process, at its first use and keeps for reuse (as
multiprocessing's resource tracker does with its pipe), which depends on the
order the tests run in. A leak of ours grows with the work done (a socket per
connection, an event loop per client) and every test here makes several
connections (two attempts of several requests), so it still shows.
"""

pytestmark = pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled",
    "ignore:.*does not have many workers.*",
    "ignore:.*GPU available but not used.*",
)


def exhausted(**fields: Any) -> S3ClientConfig:
    return S3ClientConfig(part_size=PART, max_attempts=2, **fields)


def child_pids() -> set[int]:
    """The live child processes of this process (from /proc: no dependency needed)."""
    me = os.getpid()
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == me and fields[0] != "Z":
            children.add(int(entry))
    return children


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Leaks:
    """What a test may not leave behind: threads, file descriptors, child processes."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = open_fds()
        self.children = child_pids()

    def new_threads(self) -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread not in self.threads]

    def check(self) -> None:
        gc.collect()
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if (
                not self.new_threads()
                and open_fds() <= self.fds + FD_TOLERANCE
                and child_pids() <= self.children
            ):
                return
            time.sleep(0.1)
            gc.collect()
        assert self.new_threads() == []
        assert open_fds() <= self.fds + FD_TOLERANCE, os.listdir("/proc/self/fd")
        assert child_pids() <= self.children


@pytest.fixture
def leaks(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> Callable[[], None]:
    """``leaks()`` checks that the test left no thread, fd or child process behind.

    A client is made and used through the proxy first, so the process-wide
    threads that exist once a client was made (the CRT's event loop and host
    resolver, the request watchdog) are already there and are allowed.
    """
    with make_client(endpoint=fault_proxy.endpoint) as warm:
        warm.list_objects(bucket)
    return Leaks().check


@pytest.fixture
def options(s3_region: str, fault_proxy: FaultProxy) -> dict[str, Any]:
    return {"region": s3_region, "endpoint": fault_proxy.endpoint, "s3client_config": exhausted()}


@pytest.fixture
def nothing_left(boto3_s3: Any, bucket: str) -> Callable[[str], None]:
    """``nothing_left(prefix)``: no object under ``prefix`` and no open multipart upload."""

    def check(prefix: str) -> None:
        listed = boto3_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert [item["Key"] for item in listed.get("Contents", [])] == []
        assert boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    return check


def assert_names(error: S3Exception, operation: str, bucket: str, key: str) -> None:
    assert (error.operation, error.bucket, error.key) == (operation, bucket, key)
    assert bucket in str(error)
    assert key in str(error)


def upload(client: S3Client, bucket: str, key: str, chunks: list[bytes]) -> None:
    """``S3Writer`` as a user drives it: write the chunks, close (``with``)."""
    with client.put_object(bucket, key) as writer:
        for chunk in chunks:
            writer.write(chunk)


def read_whole(client: S3Client, bucket: str, key: str, constructor: Any, size: int) -> bytes:
    with get_object(client, bucket, key, reader_constructor=constructor) as reader:
        return bytes(reader.read(size))


def save(checkpoint: S3Checkpoint, uri: str, state: Any) -> None:
    with checkpoint.writer(uri) as writer:
        torch.save(state, writer)


# ------------------------------------------------------------------ client writer
def test_the_writer_raises_the_s3_error_and_aborts_its_upload(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    leaks: Callable[[], None],
    nothing_left: Callable[[str], None],
) -> None:
    fault_proxy.inject(Fault.slow_down(), kinds=RequestKind.UPLOAD_PART, times=None)
    fault_proxy.inject(Fault.reset_before(), kinds=RequestKind.PUT, times=None)
    with make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=2) as client:
        with pytest.raises(S3ThrottlingError) as throttled:
            upload(client, bucket, "big", [b"x" * (MiB + 1) * 3] * 4)
        with pytest.raises(S3TransportError) as reset:
            upload(client, bucket, "small", [b"small"])
    assert_names(throttled.value, "UploadPart", bucket, "big")
    assert throttled.value.status == 503
    assert_names(reset.value, "PutObject", bucket, "small")
    assert isinstance(reset.value, ConnectionError)
    nothing_left("")
    leaks()


# ------------------------------------------------------------------ readers
def test_each_reader_raises_the_s3_error(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    boto3_s3: Any,
    bucket: str,
    leaks: Callable[[], None],
) -> None:
    body = os.urandom(2 * PART + 10)
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=body)
    fault_proxy.inject(Fault.internal_error(), kinds=RequestKind.GET, times=None)
    dcp_optimized = S3ReaderConstructor.dcp_optimized()
    dcp_optimized.set_item_ranges({f"s3://{bucket}/obj": [ItemRange(0, len(body))]})
    constructors = {
        "sequential": S3ReaderConstructor.sequential(),
        "range_based": S3ReaderConstructor.range_based(),
        "dcp_optimized": dcp_optimized,
    }
    with make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=2) as client:
        for kind, constructor in constructors.items():
            with pytest.raises(S3Exception) as raised:
                read_whole(client, bucket, "obj", constructor, len(body))
            assert type(raised.value) is S3Exception, kind  # a 500 has no subclass of its own
            assert_names(raised.value, "GetObject", bucket, "obj")
            assert (raised.value.status, raised.value.code) == (500, "InternalError"), kind
    leaks()


# ------------------------------------------------------------------ datasets
def failing_read(reader: Any) -> bytes:
    return bytes(reader.read())


@pytest.mark.parametrize("style", ["iterable", "map"])
def test_a_dataloader_raises_the_s3_error_and_its_workers_exit(
    fault_proxy: FaultProxy,
    boto3_s3: Any,
    bucket: str,
    options: dict[str, Any],
    leaks: Callable[[], None],
    style: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch's own wait: a DataLoader whose worker raised waits MP_STATUS_CHECK_INTERVAL
    # (5 s) for each worker to exit when it shuts down, then terminates it (the same
    # with a plain torch Dataset that raises). A shorter interval keeps the test short;
    # the workers must still be gone afterwards.
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.5)
    for index in range(4):
        boto3_s3.put_object(Bucket=bucket, Key=f"data/{index}", Body=b"x" * 100)
    fault_proxy.inject(Fault.slow_down(), kinds=RequestKind.GET, times=None)
    dataset: Any
    if style == "iterable":
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}/data/", enable_sharding=True, transform=failing_read, **options
        )
    else:
        dataset = S3MapDataset.from_prefix(
            f"s3://{bucket}/data/", transform=failing_read, **options
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    with pytest.raises(S3ThrottlingError) as raised:
        list(loader)
    # The fields crossed the process boundary with it.
    assert raised.value.operation == "GetObject"
    assert raised.value.bucket == bucket
    assert str(raised.value.key).startswith("data/")
    # The traceback holds the loader's iterator, whose end shuts the workers down.
    del raised, loader, dataset
    leaks()


# ------------------------------------------------------------------ checkpoint
def test_torch_save_and_load_raise_the_s3_error_and_write_nothing(
    fault_proxy: FaultProxy,
    bucket: str,
    boto3_s3: Any,
    options: dict[str, Any],
    leaks: Callable[[], None],
    nothing_left: Callable[[str], None],
) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(10)}, buffer)
    boto3_s3.put_object(Bucket=bucket, Key="saved.pt", Body=buffer.getvalue())
    fault_proxy.inject(Fault.internal_error(), kinds=RequestKind.UPLOAD_PART, times=None)
    fault_proxy.inject(Fault.reset_before(), kinds=RequestKind.GET, times=None)
    checkpoint = S3Checkpoint(**options)
    with pytest.raises(S3Exception) as failed:
        save(checkpoint, f"s3://{bucket}/ckpt.pt", {"w": torch.ones(3 * PART // 4)})
    with pytest.raises(S3TransportError) as reset:
        torch.load(checkpoint.reader(f"s3://{bucket}/saved.pt"), weights_only=True)
    assert_names(failed.value, "UploadPart", bucket, "ckpt.pt")
    assert failed.value.status == 500
    assert_names(reset.value, "GetObject", bucket, "saved.pt")
    nothing_left("ckpt.pt")
    del checkpoint, failed, reset
    leaks()


# ------------------------------------------------------------------ DCP
def test_dcp_save_and_load_fail_with_the_s3_error_and_publish_nothing(
    fault_proxy: FaultProxy,
    bucket: str,
    options: dict[str, Any],
    leaks: Callable[[], None],
    nothing_left: Callable[[str], None],
) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter

    saved = f"s3://{bucket}/saved"
    dcp.save({"w": torch.arange(10.0)}, storage_writer=S3StorageWriter(path=saved, **options))
    fault_proxy.inject(Fault.internal_error(), kinds=RequestKind.UPLOAD_PART, times=None)
    # Every GET of a data file fails (the .metadata is read, so the failure is the file's).
    fault_proxy.inject(
        Fault.internal_error(),
        kinds=RequestKind.GET,
        when=lambda request: ".distcp" in request.path,
        times=None,
    )
    state = {"big": torch.ones(3 * PART // 4), "small": torch.arange(5)}
    with pytest.raises(CheckpointException) as failed_save:
        dcp.save(
            state,
            storage_writer=S3StorageWriter(path=f"s3://{bucket}/dcp", thread_count=2, **options),
        )
    with pytest.raises(CheckpointException) as failed_load:
        dcp.load({"w": torch.zeros(10)}, storage_reader=S3StorageReader(path=saved, **options))
    for raised, operation, key in (
        (failed_save, "UploadPart", "dcp/"),
        (failed_load, "GetObject", "saved/"),
    ):
        (failure, _), *_ = raised.value.failures.values()
        assert isinstance(failure, S3CheckpointError)
        cause = failure.__cause__
        assert isinstance(cause, S3Exception)
        assert (cause.operation, cause.bucket, cause.status) == (operation, bucket, 500)
        assert str(cause.key).startswith(key)
        assert str(cause.key).endswith(".distcp")
    nothing_left("dcp/")  # no .metadata, no data file, no upload
    del failed_save, failed_load, raised
    leaks()


# ------------------------------------------------------------------ Lightning
@pytest.fixture
def lightning_tests(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Lightning package's trainer tests: their TinyModel and Trainer settings."""
    monkeypatch.syspath_prepend(str(PACKAGES / "s3torch-lightning" / "tests"))
    if "test_trainer" in sys.modules:
        return sys.modules["test_trainer"]
    import test_trainer

    return test_trainer


def test_a_lightning_fit_raises_throttling_and_leaves_no_checkpoint(
    lightning_tests: Any,
    fault_proxy: FaultProxy,
    bucket: str,
    options: dict[str, Any],
    leaks: Callable[[], None],
    nothing_left: Callable[[str], None],
) -> None:
    from s3torch.lightning import S3LightningCheckpoint, use_client

    fault_proxy.inject(Fault.slow_down(), kinds=RequestKind.PUT, times=None)
    plugin = S3LightningCheckpoint(**options)
    try:
        trainer = lightning_tests._trainer(plugin, f"s3://{bucket}/run", max_steps=3, logger=False)
        with pytest.raises(S3ThrottlingError) as raised:
            trainer.fit(lightning_tests.TinyModel())
        assert raised.value.operation == "PutObject"
        assert raised.value.bucket == bucket
        assert str(raised.value.key).startswith("run/")
        assert str(raised.value.key).endswith(".ckpt")
        nothing_left("run/")
    finally:
        plugin.close()
        use_client(None)
    del trainer, plugin
    leaks()
