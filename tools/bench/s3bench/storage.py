"""Parent-side S3 chores, done with boto3 independently of the clients measured.

Creating and removing the run's bucket, and checking what a PUT case left
behind (size, and the SHA-256 of the content, streamed so the parent stays
small).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from typing import Any

from locals3.pytest_plugin import boto3_client, empty_and_remove

from . import MiB

log = logging.getLogger(__name__)


class Storage:
    """A boto3 client for the benchmark server, and the run's bucket."""

    def __init__(self, endpoint: str) -> None:
        self._s3: Any = boto3_client(endpoint)
        self.bucket = f"s3bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def create_bucket(self) -> None:
        self._s3.create_bucket(Bucket=self.bucket)
        log.info("created bucket %s", self.bucket)

    def remove_bucket(self) -> None:
        """Delete every object of the run's bucket, then the bucket."""
        start = time.perf_counter()
        empty_and_remove(self._s3, self.bucket)
        log.info("removed bucket %s in %.1f s", self.bucket, time.perf_counter() - start)

    def check_upload(self, key: str, size: int, sha256: str) -> None:
        """Raise ``ValueError`` unless ``key`` holds ``size`` bytes hashing to ``sha256``."""
        body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        hasher = hashlib.sha256()
        length = 0
        for chunk in body.iter_chunks(MiB):
            hasher.update(chunk)
            length += len(chunk)
        if length != size or hasher.hexdigest() != sha256:
            raise ValueError(
                f"s3://{self.bucket}/{key} holds {length} bytes with SHA-256 "
                f"{hasher.hexdigest()}, expected {size} bytes with {sha256}"
            )
        self._s3.delete_object(Bucket=self.bucket, Key=key)
