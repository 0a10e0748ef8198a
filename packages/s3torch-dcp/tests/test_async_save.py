"""async_save: thread and process checkpointers save what loads back; failures reach the future."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

from s3torch.client import S3NotFoundError
from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

TIMEOUT = 300.0


def _result(response: Any) -> Any:
    """The future of an async save (``AsyncSaveResponse`` where staging is asynchronous too)."""
    return getattr(response, "upload_completion", response)


def test_thread_async_save_completes_and_loads(
    options: dict[str, Any],
    checkpoint_uri: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
    keys_under: Callable[[str], list[str]],
) -> None:
    state = training_state()
    future = dcp.async_save(
        state,
        storage_writer=S3StorageWriter(path=checkpoint_uri, thread_count=2, **options),
        async_checkpointer_type=AsyncCheckpointerType.THREAD,
    )
    _result(future).result(timeout=TIMEOUT)
    assert ".metadata" in keys_under("ckpt/step-1/")
    loaded = blank(state)
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    same(loaded, state)


def test_a_failed_async_save_surfaces_from_its_future(
    s3_region: str,
    s3_endpoint: str,
    bucket: str,
) -> None:
    writer = S3StorageWriter(s3_region, "s3://no-such-bucket-dcp/ckpt", endpoint=s3_endpoint)
    future = dcp.async_save(
        {"w": torch.ones(1024)},
        storage_writer=writer,
        async_checkpointer_type=AsyncCheckpointerType.THREAD,
    )
    with pytest.raises(
        BaseException, match="rank 0 failed to write s3://no-such-bucket-dcp/ckpt/"
    ) as raised:
        _result(future).result(timeout=TIMEOUT)
    error = raised.value
    if isinstance(error, CheckpointException):  # torch's per-rank wrapper (a BaseException)
        error = error.failures[0][0]
    assert isinstance(error, S3CheckpointError)
    assert error.rank == 0
    assert isinstance(error.__cause__, S3NotFoundError)
    assert error.__cause__.code == "NoSuchBucket"


def test_process_async_save_completes_and_loads(
    options: dict[str, Any],
    checkpoint_uri: str,
    same: Callable[[Any, Any], None],
) -> None:
    if not hasattr(AsyncCheckpointerType, "PROCESS"):
        pytest.skip("this torch has no process-based async checkpointer")
    state = {"w": torch.arange(100.0), "b": torch.ones(3, 3)}
    # The process checkpointer needs a process group: one of a single rank, here.
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        future = dcp.async_save(
            state,
            storage_writer=S3StorageWriter(path=checkpoint_uri, **options),
            async_checkpointer_type=AsyncCheckpointerType.PROCESS,
        )
        _result(future).result(timeout=TIMEOUT)
        loaded = {"w": torch.zeros(100), "b": torch.zeros(3, 3)}
        dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    finally:
        dist.destroy_process_group()
    same(loaded, state)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
