"""What the DCP cases save and load, and how each client does it (no Case: spawned ranks import it).

Imported by :mod:`s3bench.dcp_cases`, by the process that writes the checkpoint
the load cases read, and by the spawned ranks of the 2-rank case.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from . import MiB
from .adapters import ClientAdapter
from .case import expect

log = logging.getLogger(__name__)

THREADS = 4
LOAD_PREFIX = "dcp/load"
# Tensor sizes, in MiB, that make up each 64 MiB block of the state dict
# (one 16, two 8, four 4, eight 1 and 32 256 KiB tensors...).
_BLOCK_MIB = [16.0, 8.0, 8.0, 4.0, 4.0, 4.0, 4.0] + [1.0] * 8 + [0.25] * 32


def tensor_sizes(total: int) -> list[int]:
    """Element counts (float32) of the state dict's tensors: mixed sizes adding up to ``total``."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        for mib in _BLOCK_MIB:
            size = min(int(mib * MiB), remaining)
            if size <= 0:
                break
            sizes.append(size // 4)
            remaining -= size
    return sizes


def make_state(total: int, *, zeros: bool = False, every: int = 1) -> dict[str, Any]:
    """The benchmark state dict: ``t<i>`` filled with ``i`` (or zeros, as a load target).

    With ``every=n``, only every n-th tensor (``t0``, ``t<n>``, ...).
    """
    import torch

    return {
        f"t{index}": torch.zeros(count) if zeros else torch.full((count,), float(index))
        for index, count in enumerate(tensor_sizes(total))
        if index % every == 0
    }


def check_state(state: dict[str, Any], keys: list[str] | None = None) -> None:
    """Raise unless every tensor (of ``keys``) holds its index, checked at both ends and summed."""
    for key in keys if keys is not None else list(state):
        tensor = state[key]
        value = float(key[1:])
        expect(f"{key} ends", (float(tensor[0]), float(tensor[-1])), (value, value))
        expect(
            f"{key} sum", float(tensor.sum(dtype=tensor.dtype.to_real())), value * tensor.numel()
        )


# --------------------------------------------------------------- per client
def _reference_client(adapter: ClientAdapter) -> Any:
    from s3torchconnector._s3client import S3Client, S3ClientConfig

    config = S3ClientConfig(force_path_style=True)
    return S3Client(adapter.region, endpoint=adapter.endpoint, s3client_config=config)


def storage_writer(adapter: ClientAdapter, uri: str) -> Any:
    """The client's DCP storage writer for ``uri``, ``THREADS`` upload threads."""
    if adapter.name == "s3torch":
        from s3torch.dcp import S3StorageWriter

        return S3StorageWriter(adapter.region, uri, endpoint=adapter.endpoint, thread_count=THREADS)
    if adapter.name == "s3torchconnector":
        from s3torchconnector import dcp as reference

        writer = reference.S3StorageWriter(adapter.region, uri, thread_count=THREADS)
        # Its DCP classes take no endpoint: hand the file system a client that has one.
        writer.fs = reference.S3FileSystem(  # type: ignore[assignment]
            adapter.region, s3_client=_reference_client(adapter)
        )
        return writer
    raise NotImplementedError(f"{adapter.name} has no DCP storage classes")


def storage_reader(adapter: ClientAdapter, uri: str) -> Any:
    """The client's DCP storage reader for ``uri``, with its default (DCP-optimized) reader."""
    if adapter.name == "s3torch":
        from s3torch.dcp import S3StorageReader

        return S3StorageReader(adapter.region, uri, endpoint=adapter.endpoint)
    if adapter.name == "s3torchconnector":
        from s3torchconnector import dcp as reference

        reader = reference.S3StorageReader(adapter.region, uri)
        reader.fs = reference.S3FileSystem(
            adapter.region,
            s3_client=_reference_client(adapter),
            reader_constructor=reader._reader_constructor,
        )
        return reader
    raise NotImplementedError(f"{adapter.name} has no DCP storage classes")


def save_for_load(endpoint: str, region: str, uri: str, size: int) -> None:
    """Write the checkpoint the load cases read (run in a process of its own)."""
    from torch.distributed.checkpoint import state_dict_saver

    from s3torch.dcp import S3StorageWriter

    writer = S3StorageWriter(region, uri, endpoint=endpoint, thread_count=THREADS)
    state_dict_saver.save(make_state(size), storage_writer=writer)


def rank_main(
    rank: int,
    port: int,
    client: str,
    endpoint: str,
    region: str,
    bucket: str,
    size: int,
    commands: Any,
    replies: Any,
) -> None:
    """One of two ranks: waits for "save"/"load", does it over gloo with the other, replies."""
    import warnings

    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch.distributed as dist
    from torch.distributed.checkpoint import state_dict_loader, state_dict_saver

    from .adapters import ADAPTERS

    adapter = ADAPTERS[client](endpoint, region)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(minutes=30),
    )
    # Each rank holds half of the tensors (every other one): 1/2 of the total.
    state = {
        key: value
        for index, (key, value) in enumerate(make_state(size).items())
        if index % 2 == rank
    }
    uri = f"s3://{bucket}/dcp/two-ranks-{client}"
    try:
        while (command := commands.get()) != "stop":
            try:
                if command == "save":
                    state_dict_saver.save(state, storage_writer=storage_writer(adapter, uri))
                else:
                    for tensor in state.values():
                        tensor.zero_()
                    state_dict_loader.load(state, storage_reader=storage_reader(adapter, uri))
                    check_state(state, list(state)[::8])
                replies.put((rank, None))
            except Exception as error:
                replies.put((rank, f"{type(error).__name__}: {error}"))
    finally:
        dist.destroy_process_group()
