"""S3 Express One Zone directory buckets: names, addressing, what reaches awscrt, bad combinations.

No local server speaks S3 Express (CreateSession, session signing), so the
plumbing is checked where it meets awscrt: the real ``awscrt.s3.S3Client`` is
constructed (no request is sent), and the signing configuration and request
each directory-bucket request would carry are read back. Refusals are tested
through the calls a user makes; ``enable_s3express=False`` on moto.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import awscrt.s3
import pytest
from awscrt.auth import AwsSigningAlgorithm

from s3torch.client import S3Client, S3ClientConfig, parse_s3_uri
from s3torch.client import _transport as transport
from s3torch.client._endpoint import parse_endpoint
from s3torch.client.express import (
    directory_bucket_zone,
    is_directory_bucket,
    listing_concurrency,
)

DIRECTORY = "my-data--usw2-az1--x-s3"


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("bucket", "zone"),
    [
        (DIRECTORY, "usw2-az1"),
        ("a--use1-az10--x-s3", "use1-az10"),
        ("local-zone--usw2-lax1-az1--x-s3", "usw2-lax1-az1"),
        ("two--dashes--in-base--euw1-az3--x-s3", "euw1-az3"),
    ],
)
def test_directory_bucket_names_are_recognised_with_their_zone(bucket: str, zone: str) -> None:
    assert is_directory_bucket(bucket)
    assert directory_bucket_zone(bucket) == zone


@pytest.mark.parametrize("bucket", ["my-data", "x-s3", "data-x-s3", "data--usw2-az1--x-s3-not"])
def test_other_names_are_not_directory_buckets(bucket: str) -> None:
    assert not is_directory_bucket(bucket)
    with pytest.raises(ValueError, match="is not a directory bucket name"):
        directory_bucket_zone(bucket)


@pytest.mark.parametrize(
    ("bucket", "why"),
    [
        ("nozone--x-s3", "zone ID such as 'usw2-az1'"),
        ("--usw2-az1--x-s3", "zone ID such as 'usw2-az1'"),
        ("data--az1--x-s3", "zone ID such as 'usw2-az1'"),
        ("Data--usw2-az1--x-s3", "lower case letters, digits and hyphens"),
        ("my.data--usw2-az1--x-s3", "lower case letters, digits and hyphens"),
        ("d" * 50 + "--usw2-az1--x-s3", "at most 63 characters"),
    ],
)
def test_malformed_directory_bucket_names_are_refused_naming_them(bucket: str, why: str) -> None:
    with pytest.raises(ValueError, match="Invalid directory bucket name") as caught:
        directory_bucket_zone(bucket)
    assert repr(bucket) in str(caught.value)
    assert why in str(caught.value)


def test_uri_parsing_accepts_directory_buckets() -> None:
    assert parse_s3_uri(f"s3://{DIRECTORY}/train/0001.jpg") == (DIRECTORY, "train/0001.jpg")


def test_the_default_follows_the_reference_express_on() -> None:
    # s3torchconnector's client (mountpoint-s3-client) always enables S3 Express.
    assert S3ClientConfig().enable_s3express is True
    with pytest.raises(TypeError, match="enable_s3express must be a bool"):
        S3ClientConfig(enable_s3express="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------- addressing
def test_aws_endpoint_sends_directory_buckets_to_their_zonal_endpoint() -> None:
    endpoint = parse_endpoint(None, "us-west-2", force_path_style=False)
    host = f"{DIRECTORY}.s3express-usw2-az1.us-west-2.amazonaws.com"
    assert endpoint.host_header(DIRECTORY) == host
    assert endpoint.path(DIRECTORY, "train/a b.jpg") == "/train/a%20b.jpg"
    # A general purpose bucket next to it is unchanged.
    assert endpoint.host_header("plain") == "plain.s3.us-west-2.amazonaws.com"


def test_directory_buckets_are_virtual_hosted_even_with_force_path_style() -> None:
    endpoint = parse_endpoint(None, "us-west-2", force_path_style=True)
    assert endpoint.host_header(DIRECTORY).startswith(f"{DIRECTORY}.s3express-usw2-az1.")
    assert endpoint.path(DIRECTORY, "k") == "/k"
    assert endpoint.path("plain", "k") == "/plain/k"


def test_custom_endpoints_put_the_directory_bucket_in_the_host_or_path_for_ips() -> None:
    vpce = parse_endpoint("https://vpce-1.s3express.example.com", "us-west-2", True)
    assert vpce.host_header(DIRECTORY) == f"{DIRECTORY}.vpce-1.s3express.example.com"
    assert vpce.path(DIRECTORY, "k") == "/k"
    ip = parse_endpoint("http://127.0.0.1:9000", "us-west-2", False)
    assert ip.host_header(DIRECTORY) == "127.0.0.1:9000"
    assert ip.path(DIRECTORY, "k") == f"/{DIRECTORY}/k"


def test_express_off_addresses_directory_bucket_names_as_any_bucket() -> None:
    endpoint = parse_endpoint(None, "us-west-2", False, s3express=False)
    assert endpoint.host_header(DIRECTORY) == f"{DIRECTORY}.s3.us-west-2.amazonaws.com"


# ------------------------------------------------- what reaches awscrt
@pytest.fixture
def crt_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every awscrt S3Client our CrtClient constructs (for real)."""
    seen: list[dict[str, Any]] = []

    def construct(**kwargs: Any) -> awscrt.s3.S3Client:
        seen.append(kwargs)
        return awscrt.s3.S3Client(**kwargs)

    monkeypatch.setattr(transport, "CrtS3Client", construct)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    return seen


def _crt(config: S3ClientConfig, region: str = "us-west-2") -> transport.CrtClient:
    client = S3Client(region, s3client_config=config)
    return client._client()


def test_the_crt_client_is_built_with_enable_s3express(crt_kwargs: list[dict[str, Any]]) -> None:
    crt = _crt(S3ClientConfig())
    assert crt_kwargs[-1]["enable_s3express"] is True
    assert isinstance(crt.crt, awscrt.s3.S3Client)
    # The client's own signing stays plain SigV4 for general purpose buckets.
    assert crt_kwargs[-1]["signing_config"].algorithm == AwsSigningAlgorithm.V4
    assert crt.signing_for("plain") is None
    _crt(S3ClientConfig(enable_s3express=False))
    assert crt_kwargs[-1]["enable_s3express"] is False


def test_directory_bucket_requests_are_signed_for_s3express_sessions(
    crt_kwargs: list[dict[str, Any]],
) -> None:
    crt = _crt(S3ClientConfig())
    base = crt_kwargs[-1]["signing_config"]
    signing = crt.signing_for(DIRECTORY)
    assert signing is not None
    assert signing.algorithm == AwsSigningAlgorithm.V4_S3EXPRESS
    assert signing.service == "s3express"
    assert signing.region == "us-west-2"
    assert signing.credentials_provider is base.credentials_provider
    assert signing.signed_body_value == base.signed_body_value  # UNSIGNED-PAYLOAD, as for s3
    assert signing.use_double_uri_encode is False
    request = crt.http_request("GET", DIRECTORY, "train/0.jpg")
    assert request.headers.get("Host") == f"{DIRECTORY}.s3express-usw2-az1.us-west-2.amazonaws.com"
    assert request.path == "/train/0.jpg"


def test_express_off_signs_directory_bucket_names_as_any_bucket(
    crt_kwargs: list[dict[str, Any]],
) -> None:
    crt = _crt(S3ClientConfig(enable_s3express=False))
    assert crt.signing_for(DIRECTORY) is None
    assert crt.upload_checksum(DIRECTORY) == "CRC64NVME"


@pytest.mark.parametrize(
    ("configured", "sent"),
    [("CRC64NVME", "CRC32"), ("CRC32C", "CRC32C"), ("CRC32", "CRC32"), (None, None)],
)
def test_uploads_to_directory_buckets_use_a_checksum_s3_express_lists(
    crt_kwargs: list[dict[str, Any]], configured: Any, sent: Any
) -> None:
    crt = _crt(S3ClientConfig(checksum_algorithm=configured))
    assert crt.upload_checksum(DIRECTORY) == sent
    assert crt.upload_checksum("plain") == configured


# ------------------------------------------------- refused combinations
@pytest.mark.parametrize(
    ("config", "field"),
    [
        (S3ClientConfig(unsigned=True), "unsigned=True"),
        (S3ClientConfig(requester_pays=True), "requester_pays=True"),
    ],
)
def test_settings_directory_buckets_do_not_support_are_refused_by_the_call(
    crt_kwargs: list[dict[str, Any]], config: S3ClientConfig, field: str
) -> None:
    client = S3Client("us-west-2", s3client_config=config)
    for call in (
        lambda: client.head_object(DIRECTORY, "k"),
        lambda: client.get_object_stream(DIRECTORY, "k"),
        lambda: client.delete_object(DIRECTORY, "k"),
    ):
        with pytest.raises(ValueError, match=field) as caught:
            call()
        assert f"s3://{DIRECTORY}" in str(caught.value)


def test_a_malformed_directory_bucket_is_refused_by_the_call(
    crt_kwargs: list[dict[str, Any]],
) -> None:
    client = S3Client("us-west-2")
    with pytest.raises(ValueError, match="Invalid directory bucket name 'nozone--x-s3'"):
        client.head_object("nozone--x-s3", "k")
    with (
        pytest.raises(ValueError, match="Invalid directory bucket name 'nozone--x-s3'"),
        client.put_object("nozone--x-s3", "k") as writer,
    ):
        writer.write(b"data")


def test_directory_bucket_listings_need_prefixes_ending_in_a_slash(
    crt_kwargs: list[dict[str, Any]],
) -> None:
    client = S3Client("us-west-2")
    with pytest.raises(ValueError, match=r"Invalid prefix 'train/img' for s3://my-data--usw2"):
        client.list_objects(DIRECTORY, "train/img")
    with pytest.raises(ValueError, match="lists only prefixes that end in '/'"):
        client.list_objects_parallel(DIRECTORY, "train")
    with pytest.raises(ValueError, match="Invalid delimiter '-'"):
        client.list_objects(DIRECTORY, "train/", delimiter="-")
    # With express off the same names list as any bucket would (no check).
    off = S3Client("us-west-2", s3client_config=S3ClientConfig(enable_s3express=False))
    off.list_objects(DIRECTORY, "train/img").close()


def test_directory_buckets_are_listed_serially() -> None:
    config = S3ClientConfig()
    assert listing_concurrency(DIRECTORY, 12, config) == 1
    assert listing_concurrency("plain", 12, config) == 12
    assert listing_concurrency(DIRECTORY, 12, S3ClientConfig(enable_s3express=False)) == 12


# ---------------------------------------------- express off, on a real server
def test_express_off_reads_and_lists_a_bucket_named_like_a_directory_bucket(
    make_client: Any, s3_endpoint: str
) -> None:
    # boto3 itself treats the name as a directory bucket (CreateSession, which
    # moto lacks): create it with a plain request, as an S3-compatible server's.
    name = "s3torch-plain--usw2-az1--x-s3"
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/{name}", method="PUT")).close()
    client = make_client(enable_s3express=False)
    try:
        with client.put_object(name, "train/0.bin") as writer:
            writer.write(b"payload")
        assert client.get_object_stream(name, "train/0.bin").read() == b"payload"
        keys = [o.key for page in client.list_objects_parallel(name, "tra") for o in page.objects]
        assert keys == ["train/0.bin"]
    finally:
        client.delete_object(name, "train/0.bin")
        urllib.request.urlopen(
            urllib.request.Request(f"{s3_endpoint}/{name}", method="DELETE")
        ).close()
