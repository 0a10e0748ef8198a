"""Every runnable ```python block of docs/dcp.md and of the package README runs on the test server.

The blocks pass no endpoint (the docs' convention): here AWS_ENDPOINT_URL
points at the test server, and clients made without an endpoint use it.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

from s3torch.client import S3Client

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

ROOT = pathlib.Path(__file__).resolve().parents[3]
PAGES = [ROOT / "docs" / "dcp.md", ROOT / "packages" / "s3torch-dcp" / "README.md"]
_BLOCK = re.compile(r"(<!-- not-run -->\n)?```python\n(.*?)```", re.DOTALL)


def runnable_blocks() -> list[Any]:
    blocks = []
    for page in PAGES:
        for number, match in enumerate(_BLOCK.finditer(page.read_text())):
            if match.group(1) is None:
                blocks.append(pytest.param(match.group(2), id=f"{page.name}-{number}"))
    return blocks


@pytest.fixture
def my_bucket(boto3_s3: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    original = S3Client.__init__

    def with_env_endpoint(self: S3Client, region: str, **kwargs: Any) -> None:
        if kwargs.get("endpoint") is None:
            kwargs["endpoint"] = s3_endpoint  # what AWS_ENDPOINT_URL means to the AWS SDKs
        original(self, region, **kwargs)

    monkeypatch.setattr(S3Client, "__init__", with_env_endpoint)
    boto3_s3.create_bucket(Bucket="my-bucket")
    yield "my-bucket"
    pages = boto3_s3.get_paginator("list_objects_v2").paginate(Bucket="my-bucket")
    for page in pages:
        for item in page.get("Contents", []):
            boto3_s3.delete_object(Bucket="my-bucket", Key=item["Key"])
    boto3_s3.delete_bucket(Bucket="my-bucket")


@pytest.mark.parametrize("code", runnable_blocks())
def test_example_runs(my_bucket: str, code: str) -> None:
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs__"})
