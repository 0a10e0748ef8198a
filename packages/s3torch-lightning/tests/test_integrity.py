"""What docs/lightning.md "Integrity" says: a checkpoint is checked whole as it loads.

The plugin reads with the validating S3CheckpointReader by default, which
checks the whole object against the checksum S3 stored: a byte flipped on the wire
raises S3ChecksumMismatchError naming the checkpoint from load_checkpoint
(which Trainer.fit(ckpt_path=...) calls). The checkpoint is written in parts (moto
stores the full-object CRC64NVME of our multipart uploads).
"""

from __future__ import annotations

import pytest
import torch

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3ChecksumMismatchError, S3ClientConfig
from s3torch.lightning import S3LightningCheckpoint

MiB = 1024 * 1024


def test_a_flipped_byte_in_a_checkpoint_load_raises_naming_it(
    s3_region: str, s3_endpoint: str, bucket: str, fault_proxy: FaultProxy
) -> None:
    config = S3ClientConfig(part_size=5 * MiB)
    state = {"step": 7, "w": torch.arange(3 * MiB, dtype=torch.int32)}  # 12 MiB: 3 parts
    saver = S3LightningCheckpoint(s3_region, config, endpoint=s3_endpoint)
    saver.save_checkpoint(state, f"s3://{bucket}/last.ckpt")
    saver.close()
    loader = S3LightningCheckpoint(s3_region, config, endpoint=fault_proxy.endpoint)
    assert loader.load_checkpoint(f"s3://{bucket}/last.ckpt")["step"] == 7  # intact: loads
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, times=1)
    with pytest.raises(S3ChecksumMismatchError) as raised:
        loader.load_checkpoint(f"s3://{bucket}/last.ckpt")
    loader.close()
    assert flipped.hits == 1
    assert (raised.value.bucket, raised.value.key) == (bucket, "last.ckpt")
