"""``S3Client(region)`` without an endpoint honours the AWS SDKs' endpoint variables.

``AWS_ENDPOINT_URL_S3`` first, then ``AWS_ENDPOINT_URL``, as boto3 does; an
explicit endpoint wins; ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` turns them
off. Checked on the wire against moto: a client made with no endpoint writes
an object that boto3 then reads back from the test server.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from s3torch.client import S3Client
from s3torch.client._endpoint import configured_endpoint

REGION = "us-east-1"
ELSEWHERE = "http://127.0.0.1:1"  # well-formed; a request that went there would fail


def _round_trip(client: S3Client, boto3_s3: Any, bucket: str, key: str) -> None:
    """Write through ``client``, read back through boto3: the request reached moto."""
    with client.put_object(bucket, key) as writer:
        writer.write(key.encode())
    body = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == key.encode()
    with client.get_object_stream(bucket, key) as stream:
        assert stream.read() == key.encode()


def test_aws_endpoint_url_is_used_when_no_endpoint_is_given(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, boto3_s3: Any, bucket: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    client = S3Client(REGION)
    assert client.endpoint == s3_endpoint
    _round_trip(client, boto3_s3, bucket, "from-aws-endpoint-url")


def test_the_s3_specific_variable_wins_over_the_generic_one(
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,
    boto3_s3: Any,
    bucket: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", ELSEWHERE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    client = S3Client(REGION)
    assert client.endpoint == s3_endpoint
    _round_trip(client, boto3_s3, bucket, "from-aws-endpoint-url-s3")


def test_an_explicit_endpoint_wins_and_the_environment_is_not_read(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, boto3_s3: Any, bucket: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not a url")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url either")
    client = S3Client(REGION, endpoint=s3_endpoint)
    assert client.endpoint == s3_endpoint
    _round_trip(client, boto3_s3, bucket, "explicit")


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1:9000", "the scheme must be 'http' or 'https'"),
        ("http://127.0.0.1:9000/some/path", "no path, query or fragment"),
        ("http://127.0.0.1:notaport", "Port could not be cast"),
    ],
)
def test_a_malformed_variable_raises_naming_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="Invalid endpoint") as caught:
        S3Client(REGION)
    message = str(caught.value)
    assert f"${variable}" in message
    assert repr(value) in message
    assert problem in message


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "  ")
    assert S3Client(REGION).endpoint == "https://s3.us-east-1.amazonaws.com"


@pytest.mark.parametrize("flag", ["true", "TRUE", " True "])
def test_ignore_configured_endpoint_urls_turns_the_variables_off(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, flag: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", flag)
    assert S3Client("eu-west-1").endpoint == "https://s3.eu-west-1.amazonaws.com"


def test_ignore_flag_other_than_true_keeps_the_variables(s3_endpoint: str) -> None:
    environ = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false"}
    assert configured_endpoint(environ) == ("AWS_ENDPOINT_URL", s3_endpoint)
    assert configured_endpoint({}) is None


def test_without_any_variable_the_region_endpoint_is_used() -> None:
    assert S3Client("eu-west-1").endpoint == "https://s3.eu-west-1.amazonaws.com"


def test_a_pickled_client_keeps_the_endpoint_it_was_made_with(
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,
    boto3_s3: Any,
    bucket: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    data = pickle.dumps(S3Client(REGION))
    monkeypatch.setenv("AWS_ENDPOINT_URL", ELSEWHERE)
    copy = pickle.loads(data)
    assert copy.endpoint == s3_endpoint
    _round_trip(copy, boto3_s3, bucket, "pickled")
