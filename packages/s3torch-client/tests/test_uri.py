"""parse_s3_uri: s3://bucket/key, and a ValueError quoting anything else."""

from __future__ import annotations

import pytest

from s3torch.client import parse_s3_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key", ("bucket", "key")),
        ("s3://bucket/dir/sub/file.bin", ("bucket", "dir/sub/file.bin")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://my.dotted-bucket1/k", ("my.dotted-bucket1", "k")),
        ("s3://bucket//double//slash", ("bucket", "/double//slash")),
        ("s3://bucket/with space/and+plus=&?#%", ("bucket", "with space/and+plus=&?#%")),
        ("s3://bucket/ünïcödé/日本", ("bucket", "ünïcödé/日本")),
        ("s3://Legacy_Bucket/k", ("Legacy_Bucket", "k")),
    ],
)
def test_splits_bucket_and_key_verbatim(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "must start with 's3://'"),
        ("bucket/key", "must start with 's3://'"),
        ("s3:/bucket/key", "must start with 's3://'"),
        ("S3://bucket/key", "must start with 's3://'"),
        ("https://bucket/key", "must start with 's3://'"),
        ("s3://", "no bucket name"),
        ("s3:///key", "no bucket name"),
        ("s3://ab/key", "is not a valid bucket name"),
        ("s3://-bucket/key", "is not a valid bucket name"),
        ("s3://bucket-/key", "is not a valid bucket name"),
        ("s3://buc ket/key", "is not a valid bucket name"),
        ("s3://bu..cket/key", "is not a valid bucket name"),
        ("s3://bucket/" + "k" * 1025, "longer than 1024 bytes"),
    ],
)
def test_rejects_bad_uris_quoting_them(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_s3_uri(uri)
    assert repr(uri)[:40] in str(caught.value)


def test_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_s3_uri(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a string"):
        parse_s3_uri(b"s3://bucket/key")  # type: ignore[arg-type]
