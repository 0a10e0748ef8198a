"""Endpoints and addressing: where each request goes and what path it carries.

Pure logic: the CRT connects to the Host header we build. Virtual-hosted
requests cannot reach a loopback server here (``bucket.localhost`` does not
resolve), so their shape is checked here and path style is checked on the wire.
"""

from __future__ import annotations

import pytest

from s3torch.client import S3Client
from s3torch.client._endpoint import encode_query, parse_endpoint


def test_default_endpoint_is_the_regional_aws_endpoint_virtual_hosted() -> None:
    endpoint = parse_endpoint(None, "eu-west-1", force_path_style=False)
    assert endpoint.url == "https://s3.eu-west-1.amazonaws.com"
    assert endpoint.tls
    assert endpoint.host_header("my-bucket") == "my-bucket.s3.eu-west-1.amazonaws.com"
    assert endpoint.path("my-bucket", "a/b.bin") == "/a/b.bin"


def test_china_regions_use_the_cn_domain() -> None:
    assert parse_endpoint(None, "cn-north-1", False).url == "https://s3.cn-north-1.amazonaws.com.cn"


def test_force_path_style_puts_the_bucket_in_the_path() -> None:
    endpoint = parse_endpoint(None, "us-east-1", force_path_style=True)
    assert endpoint.host_header("my-bucket") == "s3.us-east-1.amazonaws.com"
    assert endpoint.path("my-bucket", "a/b.bin") == "/my-bucket/a/b.bin"


@pytest.mark.parametrize("bucket", ["my.dotted.bucket", "Legacy_Bucket", "UPPER"])
def test_buckets_that_are_not_dns_labels_use_path_style(bucket: str) -> None:
    endpoint = parse_endpoint(None, "us-east-1", force_path_style=False)
    assert endpoint.host_header(bucket) == "s3.us-east-1.amazonaws.com"
    assert endpoint.path(bucket, "k") == f"/{bucket}/k"


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("http://localhost:9000/", "localhost:9000"),
        ("http://[::1]:9000", "[::1]:9000"),
    ],
)
def test_loopback_and_ip_endpoints_always_use_path_style(url: str, authority: str) -> None:
    endpoint = parse_endpoint(url, "us-east-1", force_path_style=False)
    assert not endpoint.tls
    assert endpoint.host_header("bkt") == authority
    assert endpoint.path("bkt", "k") == "/bkt/k"


def test_custom_host_endpoints_keep_their_port_in_the_host_header() -> None:
    endpoint = parse_endpoint("https://minio.internal:8443", "us-east-1", False)
    assert endpoint.host_header("data") == "data.minio.internal:8443"
    assert endpoint.host_header(None) == "minio.internal:8443"
    assert endpoint.path(None) == "/"


def test_keys_are_percent_encoded_except_slashes_and_unreserved() -> None:
    endpoint = parse_endpoint("http://127.0.0.1:9000", "us-east-1", False)
    assert endpoint.path("b", "a b/c+d=e&f?g#h%i~j") == "/b/a%20b/c%2Bd%3De%26f%3Fg%23h%25i~j"
    assert endpoint.path("b", "dir//x") == "/b/dir//x"
    assert endpoint.path("b", "ü") == "/b/%C3%BC"


def test_query_strings_are_rfc3986_encoded_with_bare_flags_first() -> None:
    assert encode_query({"uploads": ""}) == "uploads"
    assert (
        encode_query({"list-type": "2", "prefix": "a b/+&="})
        == "list-type=2&prefix=a%20b%2F%2B%26%3D"
    )
    assert encode_query({"delete": "", "x": "~"}) == "delete&x=~"


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("127.0.0.1:9000", "the scheme must be 'http' or 'https'"),
        ("ftp://127.0.0.1:9000", "the scheme must be 'http' or 'https'"),
        ("http://", "no host name"),
        ("http://:9000", "no host name"),
        ("http://127.0.0.1:notaport", "Port could not be cast"),
        ("http://127.0.0.1:70000", "Port out of range"),
        ("http://127.0.0.1:0", "port 0 is not a usable port"),
        ("http://user:pw@127.0.0.1:9000", "credentials do not belong in the URL"),
        ("http://127.0.0.1:9000/bucket", "no path, query or fragment"),
        ("http://127.0.0.1:9000/?x=1", "no path, query or fragment"),
        ("", "expected a URL"),
    ],
)
def test_malformed_endpoints_raise_value_error_naming_them(endpoint: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        S3Client("us-east-1", endpoint=endpoint)
    assert repr(endpoint) in str(caught.value)


@pytest.mark.parametrize("region", ["", "useast1", "US-EAST-1", "us east 1", None])
def test_malformed_regions_raise_value_error(region: object) -> None:
    with pytest.raises(ValueError, match="Invalid region"):
        S3Client(region)  # type: ignore[arg-type]
