"""pytest plugin shared by every s3torch test suite (registered as ``locals3``).

It gives tests a real S3 server on loopback, never a mock:

* ``moto_server`` / ``s3_endpoint``: moto's S3 server, started once per session
  in a child process on 127.0.0.1 and a free port;
* ``bucket``: a fresh, empty bucket per test (emptied and removed afterwards);
* ``boto3_s3``: an independent boto3 client, to check what our client did;
* ``client`` / ``make_client``: s3torch's own client pointed at the server;
* ``fault_proxy``: a proxy in front of moto that injects errors and records
  requests;
* ``seaweedfs_server`` / ``seaweedfs_bucket``: SeaweedFS, for what moto cannot
  check (signatures, stored checksums), started only when a test asks for it.

At start-up it points the AWS environment at fake credentials and turns off
the instance-metadata lookup, so nothing can reach beyond loopback. A SIGTERM
or SIGHUP (a closed terminal) stops the servers before pytest dies of it; a
Ctrl-C stays pytest's, whose teardown stops them.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from .proxy import FaultProxy
from .seaweedfs import SeaweedFSServer
from .signals import end_process

FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_REMOVED = (
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def isolate_aws_environment() -> None:
    """Fake credentials, no profiles, no instance metadata: nothing real is reachable."""
    for name in _REMOVED:
        os.environ.pop(name, None)
    os.environ.update(FAKE_AWS_ENVIRONMENT)


def pytest_configure(config: pytest.Config) -> None:
    isolate_aws_environment()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:  # someone else's handler stays
                signal.signal(signum, _end_on_signal)


def _end_on_signal(signum: int, frame: object) -> None:
    end_process(signal.Signals(signum))


def boto3_client(endpoint: str) -> Any:
    """A boto3 S3 client for a local server (path style, no retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def empty_and_remove(s3: Any, name: str) -> None:
    """Delete every object and pending multipart upload of bucket ``name``, then the bucket."""
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def new_bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_region() -> str:
    return REGION


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(moto_server: MotoServer) -> str:
    return moto_server.endpoint


@pytest.fixture(scope="session")
def boto3_s3(s3_endpoint: str) -> Any:
    return boto3_client(s3_endpoint)


@pytest.fixture
def bucket(boto3_s3: Any) -> Iterator[str]:
    name = new_bucket_name()
    boto3_s3.create_bucket(Bucket=name)
    yield name
    empty_and_remove(boto3_s3, name)


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.port) as proxy:
        yield proxy


@pytest.fixture
def make_client(s3_endpoint: str, s3_region: str) -> Callable[..., Any]:
    """``make_client(endpoint=None, user_agent=None, **config)`` -> an s3torch S3Client."""
    from s3torch.client import S3Client, S3ClientConfig

    def make(endpoint: str | None = None, user_agent: str | None = None, **config: Any) -> Any:
        return S3Client(
            s3_region,
            endpoint=endpoint or s3_endpoint,
            s3client_config=S3ClientConfig(**config),
            user_agent=user_agent,
        )

    return make


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[SeaweedFSServer]:
    with SeaweedFSServer() as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs_boto3(seaweedfs_server: SeaweedFSServer) -> Any:
    return boto3_client(seaweedfs_server.endpoint)


@pytest.fixture
def seaweedfs_bucket(seaweedfs_boto3: Any) -> Iterator[str]:
    name = new_bucket_name()
    seaweedfs_boto3.create_bucket(Bucket=name)
    yield name
    empty_and_remove(seaweedfs_boto3, name)
