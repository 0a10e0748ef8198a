"""The DEBUG log of each request names what it is about, as the errors do."""

from __future__ import annotations

import logging

import pytest

from s3torch.client import S3Client


def test_request_logs_name_the_object_or_the_bucket(
    client: S3Client, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="s3torch.client"):
        with client.put_object(bucket, "logged/key.bin") as writer:
            writer.write(b"x")
        list(client.list_objects(bucket, prefix="logged/"))
    messages = [record.getMessage() for record in caplog.records]
    assert f"PutObject PUT s3://{bucket}/logged/key.bin started" in messages
    assert any(m.startswith(f"PutObject s3://{bucket}/logged/key.bin -> 200") for m in messages)
    assert f"ListObjectsV2 GET s3://{bucket} started" in messages
    assert any(m.startswith(f"ListObjectsV2 s3://{bucket} -> 200") for m in messages)
    assert not any("None" in m or f"{bucket}/ " in m for m in messages), messages
