"""S3TarDataset and the webdataset library: its shards read back, its decoders work on our samples.

webdataset is a test dependency only: s3torch never imports it.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import webdataset

from s3torch.datasets import S3TarDataset


def samples(count: int) -> list[dict[str, Any]]:
    return [
        {
            "__key__": f"sample{index:05d}",
            "png": os.urandom(300 + index),
            "cls": str(index % 10).encode(),
            "json": b'{"index": %d}' % index,
        }
        for index in range(count)
    ]


def tarfile_shard(written: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for sample in written:
            for extension in ("png", "cls", "json"):
                info = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                info.size = len(sample[extension])
                archive.addfile(info, io.BytesIO(sample[extension]))
    return buffer.getvalue()


def without_url(sample: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in sample.items() if name != "__url__"}


def test_shards_of_webdataset_shardwriter_and_of_tarfile_read_back_identically(
    tmp_path: Path, boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    written = samples(25)
    with webdataset.ShardWriter(str(tmp_path / "wds-%06d.tar"), maxcount=10, verbose=0) as sink:
        for sample in written:
            sink.write(sample)
    local = sorted(tmp_path.glob("wds-*.tar"))
    assert len(local) == 3
    for path in local:
        boto3_s3.put_object(Bucket=bucket, Key=f"wds/{path.name}", Body=path.read_bytes())
    boto3_s3.put_object(Bucket=bucket, Key="plain/all.tar", Body=tarfile_shard(written))

    from_webdataset = list(S3TarDataset.from_prefix(f"s3://{bucket}/wds/", **options))
    from_tarfile = list(S3TarDataset.from_objects(f"s3://{bucket}/plain/all.tar", **options))
    assert [without_url(sample) for sample in from_webdataset] == written
    assert [without_url(sample) for sample in from_tarfile] == written
    assert [sample["__url__"] for sample in from_webdataset[9:11]] == [
        f"s3://{bucket}/wds/wds-000000.tar",
        f"s3://{bucket}/wds/wds-000001.tar",
    ]


def test_webdataset_decoders_work_on_our_samples(
    boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="d.tar", Body=tarfile_shard(samples(3)))
    decoder = webdataset.autodecode.Decoder([webdataset.autodecode.basichandlers])
    dataset = S3TarDataset.from_objects(f"s3://{bucket}/d.tar", **options, transform=decoder)
    decoded = list(dataset)
    assert [(sample["cls"], sample["json"]) for sample in decoded] == [
        (0, {"index": 0}),
        (1, {"index": 1}),
        (2, {"index": 2}),
    ]
    assert isinstance(decoded[0]["png"], bytes)  # no image handler given: left as bytes
