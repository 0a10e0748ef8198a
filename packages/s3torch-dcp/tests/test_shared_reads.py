"""Loads of replicated items on several ranks read each item from S3 once per job (3 gloo ranks).

Every load here goes through the counting proxy: the bytes it sent back for
GETs are what the job read from the server.
"""

from __future__ import annotations

import pathlib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

from locals3 import Fault, FaultProxy, RequestKind, SeenRequest
from s3torch.dcp import S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

WORLD = 3
JOB_SECONDS = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def share_job(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module holding the rank bodies, importable by the spawned processes."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    import dcp_share_job

    return dcp_share_job


def run_ranks(function: Callable[..., None], *args: Any, world: int = WORLD) -> None:
    """Run ``function(rank, world, port, *args)`` on ``world`` spawned ranks, within JOB_SECONDS."""
    context = mp.start_processes(
        function, args=(world, _free_port(), *args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + JOB_SECONDS
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise AssertionError(f"the {world}-rank job did not end within {JOB_SECONDS} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(10)


def _range_size(seen: SeenRequest) -> int:
    """The bytes a ranged GET asks for (``bytes=a-b``; 0 for a GET of a whole object)."""
    spec = seen.headers.get("range", "")
    if not spec.startswith("bytes="):
        return 0
    first, _, last = spec.removeprefix("bytes=").partition("-")
    return int(last) - int(first) + 1


def get_bytes(proxy: FaultProxy, part: str) -> int:
    """Body bytes of the GETs the proxy answered for paths containing ``part``."""
    return sum(
        seen.response_bytes
        for seen in proxy.seen
        if seen.kind == RequestKind.GET and part in seen.path
    )


def data_bytes(boto3_s3: Any, bucket: str, prefix: str) -> int:
    listed = boto3_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    return sum(entry["Size"] for entry in listed if entry["Key"].endswith(".distcp"))


@pytest.fixture
def replicated_uri(share_job: Any, options: dict[str, Any], bucket: str) -> str:
    uri = f"s3://{bucket}/replicated"
    writer = S3StorageWriter(path=uri, thread_count=2, **options)
    dcp.save(share_job.replicated_state(), storage_writer=writer)
    return uri


def test_three_ranks_load_a_replicated_state_dict_reading_it_about_once(
    share_job: Any,
    options: dict[str, Any],
    replicated_uri: str,
    fault_proxy: FaultProxy,
    s3_region: str,
    bucket: str,
    boto3_s3: Any,
    tmp_path: pathlib.Path,
) -> None:
    # The same checkpoint again, loaded without shared reads: what every load read before.
    alone = f"s3://{bucket}/alone"
    writer = S3StorageWriter(path=alone, thread_count=2, **options)
    dcp.save(share_job.replicated_state(), storage_writer=writer)
    stored = data_bytes(boto3_s3, bucket, "replicated/")
    assert stored == data_bytes(boto3_s3, bucket, "alone/")
    assert stored > 3 * 1024 * 1024
    proxied = {"region": s3_region, "endpoint": fault_proxy.endpoint}
    fault_proxy.clear()
    loads = [(replicated_uri, {}), (alone, {"share_reads": False})]
    run_ranks(share_job.load_replicated, proxied, loads, str(tmp_path))
    assert [(tmp_path / f"{rank}.txt").read_text() for rank in range(WORLD)] == ["loaded"] * 3
    shared = get_bytes(fault_proxy, "/replicated/")
    unshared = get_bytes(fault_proxy, "/alone/")
    print(
        f"3-rank replicated load of {stored} data bytes: {unshared} GET bytes without "
        f"shared reads ({unshared / stored:.2f}x), {shared} with ({shared / stored:.2f}x)"
    )
    assert unshared >= 3 * stored
    assert stored <= shared <= 1.2 * stored


def test_a_sharded_load_reads_what_it_read_without_sharing(
    share_job: Any,
    fault_proxy: FaultProxy,
    s3_region: str,
    bucket: str,
    tmp_path: pathlib.Path,
) -> None:
    proxied = {"region": s3_region, "endpoint": fault_proxy.endpoint}
    uri = f"s3://{bucket}/sharded"
    run_ranks(share_job.sharded_loads, proxied, uri, str(tmp_path))
    assert [(tmp_path / f"{rank}.txt").read_text() for rank in range(WORLD)] == ["loaded"] * 3
    gets = {
        suffix: [
            (seen.path.split("/", 3)[-1], seen.headers.get("range"), seen.response_bytes)
            for seen in fault_proxy.seen
            if seen.kind == RequestKind.GET and f"/sharded-{suffix}/" in seen.path
        ]
        for suffix in ("a", "b")
    }
    # The same ranged GETs of the same bytes, shared reads on (a) or off (b).
    assert sorted(gets["a"]) == sorted(gets["b"])
    assert sum(size for *_, size in gets["a"]) > 3 * 300 * 512 * 4


def test_a_flipped_byte_in_a_shared_item_fails_the_load_on_every_rank(
    share_job: Any,
    replicated_uri: str,
    fault_proxy: FaultProxy,
    s3_region: str,
    tmp_path: pathlib.Path,
) -> None:
    proxied = {"region": s3_region, "endpoint": fault_proxy.endpoint}
    fault_proxy.clear()
    flipped = fault_proxy.inject(
        Fault.flip_response(),
        kinds=RequestKind.GET,
        when=lambda seen: seen.path.endswith(".distcp") and _range_size(seen) > 256 * 1024,
    )
    run_ranks(share_job.load_replicated_failing, proxied, replicated_uri, str(tmp_path))
    assert flipped.hits == 1
    reports = [(tmp_path / f"{rank}.txt").read_text() for rank in range(WORLD)]
    assert "no error" not in reports
    # Every rank raised; torch gathered the three failures onto every rank.
    assert reports[0] == reports[1] == reports[2]
    lines = reports[0].splitlines()
    assert [line.split(":")[0] for line in lines] == ["0", "1", "2"]
    # The rank that fetched the item found the mismatch; the others name it and its error.
    (owner,) = [r for r, line in enumerate(lines) if line.startswith(f"{r}: rank {r} failed")]
    assert "S3ChecksumMismatchError" in lines[owner]
    assert "ChecksumMismatch: item 'embedding'" in lines[owner]
    for rank, line in enumerate(lines):
        if rank != owner:
            assert f"rank {rank} could not load {replicated_uri}: rank {owner}" in line
            assert "ChecksumMismatch: item 'embedding'" in line
