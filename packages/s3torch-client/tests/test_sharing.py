"""check_shared_client: the one rule every layer applies to a client it is handed."""

from __future__ import annotations

import pytest

from s3torch.client import S3Client, S3ClientConfig, check_shared_client


def test_no_client_is_always_fine() -> None:
    check_shared_client(None, region="us-east-1", endpoint="http://127.0.0.1:1")


def test_a_client_for_the_same_region_is_accepted() -> None:
    with S3Client("eu-west-1", endpoint="http://127.0.0.1:1") as client:
        check_shared_client(client, region="eu-west-1")


def test_something_else_than_a_client_is_refused_by_type() -> None:
    with pytest.raises(TypeError, match="client must be an S3Client or None, got str"):
        check_shared_client("s3://my-bucket", region="us-east-1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [{"endpoint": "http://127.0.0.1:2"}, {"s3client_config": S3ClientConfig()}],
    ids=["endpoint", "s3client_config"],
)
def test_settings_the_client_would_ignore_are_refused(settings: dict[str, object]) -> None:
    client = S3Client("us-east-1", endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="either client or endpoint/s3client_config"):
        check_shared_client(client, region="us-east-1", **settings)  # type: ignore[arg-type]


def test_a_client_for_another_region_is_refused_naming_both() -> None:
    client = S3Client("us-west-2", endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="'us-east-1' but the client given is for 'us-west-2'"):
        check_shared_client(client, region="us-east-1")
