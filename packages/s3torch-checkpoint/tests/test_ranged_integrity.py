"""What docs/checkpoint.md "Integrity" says of the generic readers, through torch.load.

The default reader and the sequential one validate the whole object; a
range-based reader's ranged GETs carry no checksum, and torch.load checks
none of the CRC-32s its zip records: a byte flipped in one ranged GET loads
unnoticed. This pins that documented limitation (and fails, for the docs to
be updated, once that path is checked).
"""

from __future__ import annotations

from typing import Any

import torch

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.checkpoint import S3Checkpoint
from s3torch.readers import S3ReaderConstructor

MiB = 1024 * 1024


def _large_range(request: Any) -> bool:
    """A ranged GET of more than 1 MiB: one that fetches the tensor's bytes."""
    first, _, last = request.headers.get("range", "").removeprefix("bytes=").partition("-")
    return first.isdigit() and last.isdigit() and int(last) - int(first) > MiB


def test_a_byte_flipped_in_a_ranged_get_of_a_range_based_load_goes_unnoticed(
    s3_region: str, s3_endpoint: str, bucket: str, fault_proxy: FaultProxy
) -> None:
    uri = f"s3://{bucket}/c.pt"
    state = {"w": torch.arange(4 * MiB, dtype=torch.int32)}
    with S3Checkpoint(s3_region, endpoint=s3_endpoint) as checkpoint, checkpoint.writer(uri) as w:
        torch.save(state, w)
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, when=_large_range)
    constructor = S3ReaderConstructor.range_based(buffer_size=0)  # one GET per read
    with (
        S3Checkpoint(
            s3_region, endpoint=fault_proxy.endpoint, reader_constructor=constructor
        ) as checkpoint,
        checkpoint.reader(uri) as reader,
    ):
        loaded = torch.load(reader, weights_only=True)
    assert flipped.hits == 1
    assert not torch.equal(loaded["w"], state["w"])  # as docs/checkpoint.md "Integrity" says
    assert int((loaded["w"] != state["w"]).sum()) == 1
