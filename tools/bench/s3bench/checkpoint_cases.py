"""The checkpoint cases: ``torch.save`` into S3 and ``torch.load`` out of it, per client.

The state dict is ``workload.big_size`` bytes (1 GiB by default) of int32
tensors of mixed sizes, 4 to 64 MiB, whose values depend on their index and
position, so a swapped or shifted tensor fails the check.

* ``checkpoint_save``: ``torch.save(state, ...)`` of the state built in setup.
  s3torch: ``S3Checkpoint.writer`` in a ``with`` block; s3torchconnector: its
  ``S3Checkpoint.writer``; boto3: ``torch.save`` into a ``BytesIO``, then
  ``put_object`` of it. The warm-up checks the stored size against the
  archive's (torch.save into a counter). As PUT throughput on a small machine
  is bound by the server's CPU, each repetition (of either case) also records
  the CPU seconds the server process used (``server_cpu_s`` in the JSON,
  logged; with ``--latency-ms`` the process listening is the harness, whose
  relay thread answers, so the figure is the relay's, not the server's).
* ``checkpoint_load``: ``torch.load`` of one checkpoint written by s3torch
  (so it carries a full-object CRC64NVME that s3torch validates). s3torch:
  ``S3Checkpoint.reader``; s3torchconnector: its ``S3Checkpoint.reader``
  (sequential reader); boto3: ``get_object`` into a ``BytesIO``, then
  ``torch.load``. The checkpoint is uploaded by a child process in setup, so
  the worker's peak RSS is the load's alone. The warm-up checks every tensor
  (a slice at a time, dropping each once checked, so checking does not raise
  the peak); each repetition checks names and byte counts.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar, cast

from . import MiB
from .case import Case, VerificationError, expect, human_size
from .measure import ServerCpu
from .workload import Workload

log = logging.getLogger(__name__)

TENSOR_MIB = (4, 64, 8, 32, 16, 48, 12, 24, 6, 40)
"""The sizes of the state dict's tensors, cycled until the state is complete."""
CHECKPOINT_PREFIX = "checkpoint/"


def tensor_sizes(total: int) -> list[int]:
    """Bytes of each tensor: :data:`TENSOR_MIB` cycled, the last one cut to fill ``total``."""
    sizes: list[int] = []
    index = 0
    while sum(sizes) < total:
        size = min(TENSOR_MIB[index % len(TENSOR_MIB)] * MiB, total - sum(sizes))
        sizes.append(size - size % 4)
        index += 1
    return [size for size in sizes if size]


def make_tensor(index: int, nbytes: int) -> Any:
    """Tensor ``index`` of the state: int32 values ``index * 1_000_003 + position``."""
    import torch

    start = index * 1_000_003
    return torch.arange(start, start + nbytes // 4, dtype=torch.int32)


def matches_tensor(tensor: Any, index: int, slice_bytes: int = 4 * MiB) -> bool:
    """Whether ``tensor`` is :func:`make_tensor` ``(index, tensor.nbytes)``, made a slice at a time.

    Never builds the expected tensor whole, so checking a loaded state adds
    only ``slice_bytes`` to the memory the state holds.
    """
    import torch

    if tensor.dtype != torch.int32 or tensor.dim() != 1:
        return False
    start = index * 1_000_003
    step = slice_bytes // 4
    for offset in range(0, tensor.numel(), step):
        end = min(offset + step, tensor.numel())
        expected = torch.arange(start + offset, start + end, dtype=torch.int32)
        if not torch.equal(tensor[offset:end], expected):
            return False
    return True


def make_state(total: int) -> dict[str, Any]:
    """The state dict of ``total`` bytes."""
    return {
        f"layer{index:03d}.weight": make_tensor(index, size)
        for index, size in enumerate(tensor_sizes(total))
    }


def as_file(file: object) -> IO[bytes]:
    """``file`` typed as torch.save and torch.load want it (any binary file object works)."""
    return cast("IO[bytes]", file)


def checkpoint_key(workload: Workload) -> str:
    """The checkpoint the load case reads."""
    return f"{CHECKPOINT_PREFIX}state-{workload.big_size}.pt"


class _Counter(io.RawIOBase):
    """A sink that counts what ``torch.save`` writes (the archive's size, without the bytes)."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        count = memoryview(data).nbytes
        self.size += count
        return count


def archive_size(state: dict[str, Any]) -> int:
    """The size of ``torch.save(state)``."""
    import torch

    counter = _Counter()
    torch.save(state, as_file(counter))
    return counter.size


# ------------------------------------------------------------------ clients
class _Checkpointer:
    """torch.save into S3 and torch.load out of it, the way one client's docs show."""

    def __init__(self, client: str, endpoint: str, region: str) -> None:
        self.client = client
        if client == "s3torch":
            from s3torch.checkpoint import S3Checkpoint

            self._ours = S3Checkpoint(region, endpoint=endpoint)
        elif client == "s3torchconnector":
            import s3torchconnector

            config = s3torchconnector.S3ClientConfig(force_path_style=True)
            self._reference = s3torchconnector.S3Checkpoint(
                region, endpoint=endpoint, s3client_config=config
            )
        else:
            import boto3
            from botocore.config import Config

            self._boto3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(s3={"addressing_style": "path"}),
            )

    def save(self, state: dict[str, Any], bucket: str, key: str) -> None:
        import torch

        uri = f"s3://{bucket}/{key}"
        if self.client == "s3torch":
            with self._ours.writer(uri) as writer:
                torch.save(state, as_file(writer))
        elif self.client == "s3torchconnector":
            with self._reference.writer(uri) as writer:
                torch.save(state, writer)
        else:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            self._boto3.put_object(Bucket=bucket, Key=key, Body=buffer)

    def load(self, bucket: str, key: str) -> dict[str, Any]:
        import torch

        uri = f"s3://{bucket}/{key}"
        if self.client == "s3torch":
            with self._ours.reader(uri) as reader:
                state: dict[str, Any] = torch.load(as_file(reader))
        elif self.client == "s3torchconnector":
            with self._reference.reader(uri) as reader:
                state = torch.load(as_file(reader))
        else:
            body = self._boto3.get_object(Bucket=bucket, Key=key)["Body"].read()
            state = torch.load(io.BytesIO(body))
        return state


# -------------------------------------------------------------------- cases
class CheckpointCase(Case):
    """A ``torch.save`` or ``torch.load`` of the whole state dict."""

    unit = "MiB/s"
    verb: ClassVar[str]

    @classmethod
    def title(cls, workload: Workload) -> str:
        count = len(tensor_sizes(workload.big_size))
        return (
            f"{cls.verb} {human_size(workload.big_size)} state dict ({count} tensors of 4-64 MiB)"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return workload.big_size / MiB

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.big_size

    def setup(self) -> None:
        import torch  # noqa: F401 - in the RSS after setup, as for every client

        self._checkpointer = _Checkpointer(
            self.adapter.name, self.adapter.endpoint, self.adapter.region
        )
        self._server_cpu = ServerCpu(self.adapter.endpoint)

    def timed_with_server(self, operation: Callable[[], object]) -> None:
        """Run ``operation``, recording the CPU seconds the server process used meanwhile."""
        with self._server_cpu.during(self.verb):
            operation()

    def teardown(self) -> dict[str, Any]:
        return {"server_cpu_s": self._server_cpu.seconds}


class CheckpointSave(CheckpointCase):
    """``torch.save`` of the state dict into S3."""

    name = "checkpoint_save"
    verb = "torch.save"

    def setup(self) -> None:
        super().setup()
        self._state = make_state(self.workload.big_size)
        self._key = f"{CHECKPOINT_PREFIX}saved-by-{self.adapter.name}.pt"

    def warm_up(self) -> None:
        self._checkpointer.save(self._state, self.workload.bucket, self._key)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.adapter.endpoint, region_name=self.adapter.region)
        stored = s3.head_object(Bucket=self.workload.bucket, Key=self._key)["ContentLength"]
        expect("size of the stored checkpoint", stored, archive_size(self._state))
        tail = s3.get_object(Bucket=self.workload.bucket, Key=self._key, Range="bytes=-22")
        expect("end of the zip archive", tail["Body"].read()[:4], b"PK\x05\x06")

    def run(self) -> None:
        self.timed_with_server(
            lambda: self._checkpointer.save(self._state, self.workload.bucket, self._key)
        )

    def teardown(self) -> dict[str, Any]:
        self._state = {}
        return super().teardown()


class CheckpointLoad(CheckpointCase):
    """``torch.load`` of the state dict out of S3 (a checkpoint s3torch wrote)."""

    name = "checkpoint_load"
    verb = "torch.load"

    def setup(self) -> None:
        super().setup()
        self._sizes = tensor_sizes(self.workload.big_size)
        _upload_in_child(self.adapter.endpoint, self.adapter.region, self.workload)

    def _load(self) -> dict[str, Any]:
        state = self._checkpointer.load(self.workload.bucket, checkpoint_key(self.workload))
        expect("tensors", len(state), len(self._sizes))
        expect("bytes", [t.nbytes for t in state.values()], self._sizes)
        return state

    def warm_up(self) -> None:
        state = self._load()
        expect("names", list(state), [f"layer{index:03d}.weight" for index in range(len(state))])
        # Tensor by tensor, each dropped once checked, against the expected
        # values made a slice at a time: checking adds next to nothing to the
        # peak RSS, which is the load's own.
        for index, name in enumerate(list(state)):
            if not matches_tensor(state.pop(name), index):
                raise VerificationError(f"{name}: the loaded values differ from the saved ones")

    def run(self) -> None:
        self.timed_with_server(self._load)


def _upload_in_child(endpoint: str, region: str, workload: Workload) -> None:
    """Have a child process write the load case's checkpoint with s3torch, unless it exists."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from s3bench.checkpoint_cases import ensure_checkpoint;"
        "from s3bench.workload import Workload;"
        "ensure_checkpoint(sys.argv[2], sys.argv[3], Workload.from_json(sys.argv[4]))"
    )
    bench = str(Path(__file__).resolve().parent.parent)
    subprocess.run(
        [sys.executable, "-c", code, bench, endpoint, region, workload.to_json()],
        check=True,
        timeout=1800,
    )


def ensure_checkpoint(endpoint: str, region: str, workload: Workload) -> None:
    """Write the load case's checkpoint with s3torch, unless it is there already."""
    from s3torch.checkpoint import S3Checkpoint
    from s3torch.client import S3NotFoundError

    key = checkpoint_key(workload)
    with S3Checkpoint(region, endpoint=endpoint) as checkpoint:
        try:
            checkpoint.client.head_object(workload.bucket, key)
            return  # a failed save leaves nothing, so what is there is complete
        except S3NotFoundError:
            pass
        with checkpoint.writer(f"s3://{workload.bucket}/{key}") as writer:
            import torch

            torch.save(make_state(workload.big_size), as_file(writer))
    log.info("uploaded the checkpoint s3://%s/%s", workload.bucket, key)


CHECKPOINT_CASES: dict[str, type[Case]] = {
    case.name: case for case in (CheckpointSave, CheckpointLoad)
}
"""The checkpoint cases, by name."""
