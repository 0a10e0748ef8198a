"""One prefix listing per job: rank 0 lists, and the ranks share it through torch.distributed.

Without it, every rank of a job lists the prefix for itself (its DataLoader
workers share that listing, see :mod:`._shared_listing`): R ranks, R walks
of the prefix per epoch, which a large job turns into throttling.

:func:`list_for_job` is a collective: every rank's main process must call it,
in the same order. The ranks first check (an all-reduce of a hash) that
they all list the same prefix there; if not (each rank given a prefix of
its own, say), each lists its own, as without a process group. Then rank 0
lists the prefix into the compressed bytes of a
listing file (about 30 bytes an object, never the objects as Python
objects), broadcasts their length and then the bytes themselves, and every
rank (0 included) writes them as the complete listing file of generation
:data:`JOB_GENERATION`, which its processes (the main one, its DataLoader
workers) then read like any shared listing. A listing that fails on rank 0
is broadcast instead, pickled, and every rank raises it: the same type, the
same message. Each broadcast is bounded by the process group's timeout, like
any collective of that group.

Which calls are collective points is the datasets' business (an iterable
dataset's ``set_epoch``, the first ``len()`` a ``DistributedSampler`` asks of
a map dataset); see docs/datasets.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import sys
from collections.abc import Callable, Iterator

import torch
import torch.distributed
import torch.utils.data

from s3torch.client import S3Client

from ._sharding import distributed_rank
from ._shared_listing import SharedListing, encode_listing
from ._source import PrefixListing

__all__ = [
    "JOB_GENERATION",
    "called_by_distributed_sampler",
    "in_group",
    "in_job",
    "list_for_job",
]

log = logging.getLogger(__name__)

JOB_GENERATION = "job"
"""The shared listing generation that holds the listing of the last collective point."""

_LISTING, _ERROR = 0, 1
_LISTING_RANK = 0


def in_group() -> bool:
    """Whether this process sees a process group of more than one rank (forked workers do)."""
    rank = distributed_rank()
    return rank is not None and rank[1] > 1


def in_job() -> bool:
    """Whether this is a rank's main process in a process group of more than one rank."""
    return in_group() and torch.utils.data.get_worker_info() is None


def called_by_distributed_sampler() -> bool:
    """Whether the caller of our caller is ``DistributedSampler`` (made on every rank).

    A ``len()`` that a ``DistributedSampler`` asks for, when it is made or
    iterated, runs on every rank; one that user code asks for may run on one
    rank only (``if rank == 0: print(len(dataset))``), and a collective
    there would wait for ranks that never come.
    """
    try:
        caller = sys._getframe(2).f_code
    except ValueError:  # pragma: no cover - no such frame
        return False
    sampler = torch.utils.data.DistributedSampler
    return caller in (sampler.__init__.__code__, sampler.__iter__.__code__)


def list_for_job(
    source: PrefixListing, client: Callable[[], S3Client], shared: SharedListing
) -> bool:
    """List ``source`` once for the job and write it as this rank's :data:`JOB_GENERATION` file.

    A collective of the default process group: call it on every rank.
    ``client`` is called on the listing rank only. Returns whether this
    rank's file was written (if not, a warning said why, and the rank lists
    for itself).

    Raises:
        S3Exception: the listing failed on the listing rank (the same error
            on every rank).
        RuntimeError: a broadcast failed, or timed out because a rank did
            not reach this point.
    """
    rank, _ = distributed_rank() or (0, 1)
    device = _device()
    with _naming(source):
        same = _same_prefix_everywhere(source, device)
    if not same:
        log.info(
            "s3://%s/%s: the ranks' datasets list different prefixes at this point: "
            "each rank lists its own",
            source.bucket,
            source.prefix,
        )
        return False
    payload: bytearray | None = None
    error: BaseException | None = None
    if rank == _LISTING_RANK:
        try:
            payload = bytearray()
            for piece in encode_listing(source.pages(client())):
                payload += piece
            status = _LISTING
        except BaseException as raised:  # every rank must hear of it, then raise it
            error = raised
            payload, status = bytearray(_pickled(raised, source)), _ERROR
        header = torch.tensor([status, len(payload)], dtype=torch.int64, device=device)
    else:
        header = torch.zeros(2, dtype=torch.int64, device=device)
    with _naming(source):
        torch.distributed.broadcast(header, src=_LISTING_RANK)
        status, size = (int(value) for value in header.tolist())
        if payload is None:
            payload = bytearray(size)
        _broadcast_bytes(payload, device)
    if status == _ERROR:
        if error is not None:
            raise error
        received: BaseException = pickle.loads(payload)  # from our own job
        _note(received, f"raised on rank {_LISTING_RANK}, which lists for the whole job")
        raise received
    log.debug(
        "s3://%s/%s: job listing of %d bytes (rank %d)", source.bucket, source.prefix, size, rank
    )
    return shared.put(JOB_GENERATION, payload)


@contextlib.contextmanager
def _naming(source: PrefixListing) -> Iterator[None]:
    """Collectives within say, when they fail (a timeout, say), which listing they shared."""
    try:
        yield
    except Exception as failed:
        _note(
            failed,
            f"while sharing the listing of s3://{source.bucket}/{source.prefix} across the "
            "job's ranks: every rank must reach the same point (see docs/datasets.md, "
            "'One listing per job')",
        )
        raise


def _same_prefix_everywhere(source: PrefixListing, device: torch.device) -> bool:
    """Whether every rank lists the same prefix here (ranks given a prefix each do not)."""
    digest = hashlib.sha256(f"{source.bucket}\0{source.prefix}".encode()).digest()
    mine = int.from_bytes(digest[:7], "big")  # fits an int64, negated too
    extremes = torch.tensor([mine, -mine], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(extremes, op=torch.distributed.ReduceOp.MAX)
    highest, lowest = int(extremes[0]), -int(extremes[1])
    return highest == lowest


def _device() -> torch.device:
    """Where the default group's collectives take tensors: CUDA for NCCL, else the CPU."""
    backend = str(torch.distributed.get_backend())
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast_bytes(payload: bytearray, device: torch.device) -> None:
    """Broadcast ``payload`` from the listing rank into everyone's (of the same length)."""
    if not payload:
        return
    tensor = torch.frombuffer(payload, dtype=torch.uint8)  # shares the memory
    if device.type == "cpu":
        torch.distributed.broadcast(tensor, src=_LISTING_RANK)
        return
    moved = tensor.to(device)
    torch.distributed.broadcast(moved, src=_LISTING_RANK)
    tensor.copy_(moved.cpu())


def _note(error: BaseException, text: str) -> None:
    """Add a note to ``error`` (shown in its traceback on Python 3.11+)."""
    if sys.version_info >= (3, 11):
        error.add_note(text)
    else:  # pragma: no cover - Python 3.10
        error.__notes__ = [*getattr(error, "__notes__", ()), text]  # type: ignore[attr-defined]


def _pickled(error: BaseException, source: PrefixListing) -> bytes:
    """``error``, pickled; if it does not pickle (or is no Exception), a RuntimeError saying so."""
    if not isinstance(error, Exception):  # interrupted: the other ranks were not
        error = RuntimeError(f"rank {_LISTING_RANK} stopped listing: {error!r}")
    try:
        data = pickle.dumps(error)
        pickle.loads(data)  # it must also unpickle
    except Exception:
        return pickle.dumps(
            RuntimeError(f"listing s3://{source.bucket}/{source.prefix} failed: {error!r}")
        )
    return data
