"""Loading one checkpoint in every rank of a job reads it from S3 about once (3 gloo ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from locals3 import Fault, RequestKind
from s3torch.checkpoint import S3Checkpoint
from s3torch.readers import S3ReaderConstructor

sys.path.insert(0, str(Path(__file__).parent))
from coop_job import state_dict

JOB = Path(__file__).with_name("coop_job.py")
RANKS = 3


def body_bytes(seen: list[Any], agent: str) -> int:
    """Body bytes the server sent for the GETs of the clients whose user agent says ``agent``."""
    return sum(
        request.response_bytes
        for request in seen
        if request.kind is RequestKind.GET and agent in request.headers.get("user-agent", "")
    )


def run_ranks(endpoint: str, region: str, bucket: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Run the RANKS ranks of coop_job.py to the end (killed after 120 s); what each saw."""
    init_file = tmp_path / "init"
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                str(JOB),
                endpoint,
                region,
                bucket,
                str(init_file),
                str(rank),
                str(RANKS),
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(RANKS)
    ]
    try:
        outputs = [process.communicate(timeout=120) for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(ranks, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    return [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(RANKS)]


def test_three_ranks_read_a_checkpoint_about_once(
    small_parts: S3Checkpoint, bucket: str, fault_proxy: Any, s3_region: str, tmp_path: Path
) -> None:
    for name in ("good.pt", "single.pt", "bad.pt"):
        with small_parts.writer(f"s3://{bucket}/{name}") as writer:
            torch.save(state_dict(name), writer)
    size = small_parts.client.head_object(bucket, "good.pt").size
    assert size > 6 * 2**20  # two parts: moto stores the FULL_OBJECT CRC64NVME of our upload
    corrupted = fault_proxy.inject(
        Fault.flip_response(),
        kinds=RequestKind.GET,
        when=lambda request: request.path.endswith("/bad.pt"),
    )

    results = run_ranks(fault_proxy.endpoint, s3_region, bucket, tmp_path)

    seen = list(fault_proxy.seen)
    alone, shared = body_bytes(seen, "plain"), body_bytes(seen, "shared")
    single = small_parts.client.head_object(bucket, "single.pt").size
    bad = small_parts.client.head_object(bucket, "bad.pt").size
    print(
        f"GET body bytes: alone {alone / size:.2f}x, shared {shared / (size + single + bad):.2f}x"
    )
    assert alone >= RANKS * size, (alone, size)  # each rank downloads the whole checkpoint
    # good.pt shared out; single.pt (no stored checksum: rank 0 downloads it,
    # validated as a lone reader would); bad.pt fetched once, then refused.
    assert shared <= 1.2 * (size + single + bad), (shared, size, single, bad)
    assert corrupted.hits == 1
    for rank, result in enumerate(results):
        assert result["plain"] is True, rank
        assert result["good.pt"] is True, rank
        assert result["single.pt"] is True, rank
        kind, message = result["bad.pt"]
        assert kind == "S3ChecksumMismatchError", (rank, message)
        assert f"s3://{bucket}/bad.pt" in message, message
        assert f"the bytes the {RANKS} ranks fetched" in message, message  # their shares' CRCs
        kind, message = result["missing.pt"]  # rank 0's HEAD failed: every rank raises it
        assert kind == "S3NotFoundError", (rank, message)
        assert f"s3://{bucket}/missing.pt" in message, message


def test_a_process_group_needs_torch_distributed(checkpoint: S3Checkpoint, bucket: str) -> None:
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match=rf"s3://{bucket}/x\.pt.*init_process_group"):
        checkpoint.reader(f"s3://{bucket}/x.pt", process_group=object())


def test_only_the_default_reader_shares_a_load(s3_region: str, s3_endpoint: str) -> None:
    with (
        S3Checkpoint(
            s3_region, endpoint=s3_endpoint, reader_constructor=S3ReaderConstructor.sequential()
        ) as checkpoint,
        pytest.raises(ValueError, match=r"process_group needs the default reader.*s3://bkt/k\.pt"),
    ):
        checkpoint.reader("s3://bkt/k.pt", process_group=object())


@pytest.mark.parametrize(("blocks", "ranks"), [(7, 3), (3, 3), (2, 3), (1, 8), (64, 8), (10, 4)])
def test_blocks_are_dealt_in_contiguous_shares_as_even_as_they_allow(
    blocks: int, ranks: int
) -> None:
    from s3torch.checkpoint._cooperative import owners

    dealt = owners(blocks, ranks)
    assert len(dealt) == blocks
    assert dealt == sorted(dealt)  # contiguous: one ranged GET per rank
    assert set(dealt) <= set(range(ranks))
    counts = [dealt.count(rank) for rank in range(ranks)]
    assert max(counts) - min(counts) <= 1
