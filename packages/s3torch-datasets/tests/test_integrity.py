"""What docs/datasets.md "Integrity" says, through a DataLoader, with a byte flipped on the wire.

The default reader (sequential) checks each whole object against the checksum
S3 stored, so a flipped byte raises S3ChecksumMismatchError naming the
object; a range-based reader's ranged GETs carry no checksum, so the same
flip reaches the transform (pinned here: this test fails, for the docs to be
updated, once that path is checked). The objects are put by boto3, for which
moto stores a CRC32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3ChecksumMismatchError
from s3torch.datasets import S3MapDataset
from s3torch.readers import S3ReaderConstructor

KEY = "data/0003"


def read(reader: Any) -> bytes:
    return bytes(reader.read())


def read_in_pieces(reader: Any) -> bytes:
    """16 KiB at a time: a range-based reader fetches each with a ranged GET."""
    pieces = []
    while piece := reader.read(16 * 1024):
        pieces.append(bytes(piece))
    return b"".join(pieces)


def _of(key: str) -> Callable[[Any], bool]:
    return lambda request: request.path.split("?")[0].endswith("/" + key)


def test_a_flipped_byte_in_an_object_read_by_the_default_reader_raises_naming_it(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    s3_region: str,
    fault_proxy: FaultProxy,
) -> None:
    upload([f"data/{i:04d}" for i in range(6)], size=64 * 1024)
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}/data/", region=s3_region, endpoint=fault_proxy.endpoint, transform=read
    )
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, when=_of(KEY))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)
    with pytest.raises(S3ChecksumMismatchError) as raised:
        list(loader)
    assert flipped.hits == 1
    assert (raised.value.bucket, raised.value.key) == (bucket, KEY)


def test_a_flipped_byte_in_a_range_based_read_reaches_the_transform_as_documented(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    s3_region: str,
    fault_proxy: FaultProxy,
) -> None:
    objects = upload([f"data/{i:04d}" for i in range(6)], size=64 * 1024)
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}/data/",
        region=s3_region,
        endpoint=fault_proxy.endpoint,
        transform=read_in_pieces,
        reader_constructor=S3ReaderConstructor.range_based(buffer_size=0),
    )
    flipped = fault_proxy.inject(
        Fault.flip_response(), kinds=RequestKind.GET, when=_of(KEY), times=1
    )
    loaded = list(torch.utils.data.DataLoader(dataset, batch_size=None))
    assert flipped.hits == 1
    wrong = [i for i, data in enumerate(loaded) if data != objects[f"data/{i:04d}"]]
    assert wrong == [3]
    assert sum(a != b for a, b in zip(loaded[3], objects[KEY], strict=True)) == 1
