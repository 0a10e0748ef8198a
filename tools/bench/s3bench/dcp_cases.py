"""The Distributed Checkpoint cases: save and load a state dict through each client's DCP classes.

One process saves (or loads) a state dict of ``workload.big_size`` bytes
(1 GiB by default) made of float32 tensors of mixed sizes, with four upload
threads, through ``s3torch.dcp`` or the reference's ``s3torchconnector.dcp``.
The partial load reads every fourth tensor (25% of the keys and of the bytes).
The 2-rank case saves and loads the same total over two gloo ranks.

Only s3torch and s3torchconnector have DCP classes (run with
``--clients s3torch,s3torchconnector``). The save cases report the server's
CPU-seconds per repetition (``server_cpu_s`` in the JSON), since a PUT-bound
run is limited by the server here, not by the client.

The checkpoint the load cases read is written once per run, by a separate
process (so no worker's peak RSS includes the save), with s3torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import time
from typing import Any, ClassVar

from . import MiB
from .adapters import ClientAdapter
from .case import Case, human_size
from .dcp_state import (
    LOAD_PREFIX,
    THREADS,
    check_state,
    make_state,
    rank_main,
    storage_reader,
    storage_writer,
    tensor_sizes,
)
from .measure import ServerCpu
from .workload import Workload

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ cases
class _DCPCase(Case):
    unit = "MiB/s"

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return cls.bytes_moved(workload) / MiB

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.big_size


class DCPSave(_DCPCase):
    """Save the state dict (overwriting the client's previous save)."""

    name = "dcp_save"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"DCP save, {human_size(workload.big_size)} state dict, {THREADS} threads"

    def setup(self) -> None:
        import torch.distributed.checkpoint  # noqa: F401 - imported before timing

        self.state = make_state(self.workload.big_size)
        self.uri = f"s3://{self.workload.bucket}/dcp/save-{self.adapter.name}"
        self.server_cpu = ServerCpu(self.adapter.endpoint)

    def run(self) -> None:
        from torch.distributed.checkpoint import state_dict_saver

        with self.server_cpu.during("save"):
            state_dict_saver.save(self.state, storage_writer=storage_writer(self.adapter, self.uri))

    def teardown(self) -> dict[str, Any]:
        return {"server_cpu_s": self.server_cpu.seconds[1:]}  # the warm-up's is left out


def _ensure_checkpoint(adapter: ClientAdapter, workload: Workload) -> str:
    """The URI of the checkpoint the load cases read; written once per size, by a separate process.

    Its prefix names the size: a bucket shared by runs of several sizes holds one of each.
    """
    prefix = f"{LOAD_PREFIX}/{workload.big_size}"
    uri = f"s3://{workload.bucket}/{prefix}"
    from s3torch.client import S3Client, S3NotFoundError

    with S3Client(adapter.region, endpoint=adapter.endpoint) as client:
        try:
            client.head_object(workload.bucket, f"{prefix}/.metadata")
            return uri
        except S3NotFoundError:
            pass
    start = time.perf_counter()
    bench_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        f"import sys; sys.path.insert(0, {bench_root!r}); "
        "from s3bench.dcp_state import save_for_load; "
        f"save_for_load({adapter.endpoint!r}, {adapter.region!r}, {uri!r}, {workload.big_size})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=3600)
    log.info("wrote the checkpoint to load in %.1f s", time.perf_counter() - start)
    return uri


class DCPLoad(_DCPCase):
    """Load the whole state dict into preallocated tensors."""

    name = "dcp_load"
    fraction: ClassVar[int] = 1  # every n-th tensor

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"DCP load, {human_size(workload.big_size)} state dict ({THREADS}-thread save)"

    def setup(self) -> None:
        import torch.distributed.checkpoint  # noqa: F401 - imported before timing

        self.uri = _ensure_checkpoint(self.adapter, self.workload)
        # Only the tensors loaded: the timed load plans, and the RSS holds, no more.
        self.state = make_state(self.workload.big_size, zeros=True, every=self.fraction)
        self.keys = list(self.state)

    def _load(self) -> None:
        from torch.distributed.checkpoint import state_dict_loader

        for tensor in self.state.values():
            tensor.zero_()
        state_dict_loader.load(self.state, storage_reader=storage_reader(self.adapter, self.uri))

    def warm_up(self) -> None:
        self._load()
        check_state(self.state)

    def run(self) -> None:
        self._load()
        check_state(self.state, self.keys[:: max(1, len(self.keys) // 8)])


class DCPLoadPartial(DCPLoad):
    """Load every fourth tensor only (25% of the keys and about 25% of the bytes)."""

    name = "dcp_load_partial"
    fraction = 4

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"DCP load of 25% of the keys of a {human_size(workload.big_size)} state dict"

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        sizes = tensor_sizes(workload.big_size)
        return sum(4 * count for index, count in enumerate(sizes) if index % cls.fraction == 0)


# ----------------------------------------------------------------- 2 ranks
class DCPTwoRanks(_DCPCase):
    """Two gloo ranks (processes) save, then load, half of the state dict each.

    The wall time is the worker's; the CPU time counts the worker only (the
    ranks are other processes).
    """

    name = "dcp_2rank_save_load"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"DCP save + load over 2 ranks, {human_size(workload.big_size)} in total"

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return 2 * workload.big_size  # saved and loaded

    def setup(self) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        context = multiprocessing.get_context("spawn")
        self.commands = [context.Queue() for _ in range(2)]
        self.replies = context.Queue()
        adapter, workload = self.adapter, self.workload
        self.ranks = [
            context.Process(
                target=rank_main,
                args=(
                    rank,
                    port,
                    adapter.name,
                    adapter.endpoint,
                    adapter.region,
                    workload.bucket,
                    workload.big_size,
                    self.commands[rank],
                    self.replies,
                ),
            )
            for rank in range(2)
        ]
        for process in self.ranks:
            process.start()

    def _both(self, command: str) -> None:
        for queue in self.commands:
            queue.put(command)
        for _ in range(2):
            rank, error = self.replies.get(timeout=3600)
            if error is not None:
                raise RuntimeError(f"rank {rank} failed to {command}: {error}")

    def run(self) -> None:
        self._both("save")
        self._both("load")

    def teardown(self) -> dict[str, Any]:
        for queue in self.commands:
            queue.put("stop")
        for process in self.ranks:
            process.join(timeout=600)
        return {}


DCP_CASES: dict[str, type[Case]] = {
    case.name: case for case in (DCPSave, DCPLoad, DCPLoadPartial, DCPTwoRanks)
}
"""The DCP cases, by name, in table order."""
