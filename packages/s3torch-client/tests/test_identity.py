"""Credentials, user agent, requester pays and logging: what goes over the wire."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from locals3 import FaultProxy
from s3torch.client import S3Client, S3CredentialsError, __version__


def _access_key(request_headers: dict[str, str]) -> str | None:
    authorization = request_headers.get("authorization")
    if authorization is None:
        return None
    credential = authorization.split("Credential=", 1)[1]
    return credential.split("/", 1)[0]


def test_requests_are_signed_with_the_environment_credentials(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    make_client(endpoint=fault_proxy.endpoint).delete_object(bucket, "k")
    (request,) = fault_proxy.seen
    assert _access_key(request.headers) == os.environ["AWS_ACCESS_KEY_ID"]
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")


def test_environment_credentials_are_read_for_each_request(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint)
    client.delete_object(bucket, "k")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ROTATEDKEY")  # e.g. a refreshed session
    client.delete_object(bucket, "k")
    keys = [_access_key(request.headers) for request in fault_proxy.seen]
    assert keys[1] == "ROTATEDKEY"
    assert keys[0] != "ROTATEDKEY"


def test_the_default_chain_is_built_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from s3torch.client import _runtime
    from s3torch.client._transport import _credentials_provider

    runtime = _runtime.current()
    with_environment = _credentials_provider(runtime, None)
    assert _credentials_provider(runtime, None) is not with_environment  # cheap, never cached
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    chain = _credentials_provider(runtime, None)
    assert _credentials_provider(runtime, None) is chain
    monkeypatch.setenv("AWS_PROFILE", "other")
    assert _credentials_provider(runtime, None) is not chain


def test_unsigned_requests_carry_no_authorization(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="public", Body=b"open", ACL="public-read")
    client = make_client(endpoint=fault_proxy.endpoint, unsigned=True)
    assert client.get_object_stream(bucket, "public").read() == b"open"
    assert "authorization" not in fault_proxy.seen[0].headers


def test_user_agent_names_s3torch_python_os_arch_and_the_caller(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, user_agent="my-trainer/2.1")
    client.delete_object(bucket, "k")
    sent = fault_proxy.seen[0].headers["user-agent"]
    assert sent.startswith(f"s3torch/{__version__} python/{platform.python_version()} ")
    assert f"os/{sys.platform}" in sent
    assert f"arch/{platform.machine()}" in sent
    assert "my-trainer/2.1" in sent
    assert client.user_agent in sent


def test_requester_pays_header_is_sent(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    make_client(endpoint=fault_proxy.endpoint, requester_pays=True).delete_object(bucket, "k")
    assert fault_proxy.seen[0].headers["x-amz-request-payer"] == "requester"
    fault_proxy.clear()
    make_client(endpoint=fault_proxy.endpoint).delete_object(bucket, "k")
    assert "x-amz-request-payer" not in fault_proxy.seen[0].headers


_PROBE = textwrap.dedent(
    """
    import sys
    from s3torch.client import S3Client, S3ClientConfig
    profile = sys.argv[2] or None
    client = S3Client("us-east-1", endpoint=sys.argv[1],
                      s3client_config=S3ClientConfig(profile=profile, max_attempts=1))
    client.delete_object(sys.argv[3], "k")
    """
)


def _run_probe(
    endpoint: str, profile: str, bucket: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run one request in a fresh interpreter whose AWS environment is only ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(AWS_EC2_METADATA_DISABLED="true", **env)
    return subprocess.run(
        [sys.executable, "-c", _PROBE, endpoint, profile, bucket],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "credentials"
    path.write_text(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = d\n"
        "[train]\naws_access_key_id = TRAINKEY\naws_secret_access_key = t\n"
    )
    return path


@pytest.mark.parametrize(
    ("profile", "env", "expected_key"),
    [
        ("", {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "e"}, "ENVKEY"),
        ("", {"AWS_PROFILE": "train"}, "TRAINKEY"),
        ("", {}, "DEFAULTKEY"),
        ("train", {}, "TRAINKEY"),
    ],
    ids=["environment", "AWS_PROFILE", "default-profile", "explicit-profile"],
)
def test_credentials_come_from_the_default_chain_or_the_named_profile(
    fault_proxy: FaultProxy,
    bucket: str,
    credentials_file: Path,
    profile: str,
    env: dict[str, str],
    expected_key: str,
) -> None:
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file),
        "AWS_CONFIG_FILE": os.devnull,
        **env,
    }
    result = _run_probe(fault_proxy.endpoint, profile, bucket, env)
    assert result.returncode == 0, result.stderr
    assert [_access_key(r.headers) for r in fault_proxy.seen] == [expected_key]


def test_missing_credentials_give_an_error_that_says_what_to_do(
    fault_proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    result = _run_probe(
        fault_proxy.endpoint,
        "",
        bucket,
        {
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": os.devnull,
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode != 0
    assert "S3CredentialsError" in result.stderr
    assert "No usable AWS credentials were found" in result.stderr
    assert fault_proxy.seen == []  # nothing unsigned was sent
    assert issubclass(S3CredentialsError, PermissionError)


@pytest.mark.parametrize("files", ["present", "absent"])
def test_a_profile_that_does_not_exist_is_named_with_the_files_looked_in(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    credentials_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: str,
) -> None:
    config_file = tmp_path / "config"
    if files == "present":
        config_file.write_text("[profile other]\nregion = us-east-1\n")
    else:
        credentials_file = tmp_path / "no-credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials_file))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    client = make_client(endpoint=fault_proxy.endpoint, profile="nosuch", max_attempts=1)
    with pytest.raises(S3CredentialsError) as caught:
        client.delete_object(bucket, "k")
    message = str(caught.value)
    assert "'nosuch'" in message
    assert str(credentials_file) in message
    assert str(config_file) in message
    assert isinstance(caught.value, PermissionError)
    assert fault_proxy.seen == []


def test_operations_are_logged_at_debug_without_secrets(
    client: S3Client, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="s3torch.client"):
        with client.put_object(bucket, "logged") as writer:
            writer.write(b"data")
        client.get_object_stream(bucket, "logged").read()
        client.head_object(bucket, "logged")
    text = caplog.text
    assert f"PutObject s3://{bucket}/logged" in text
    assert f"GetObject s3://{bucket}/logged" in text
    assert "HeadObject" in text
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text
    for secret in ("Authorization", "AWS4-HMAC", "aws_secret", "Credential="):
        assert secret not in text


def test_debug_logs_never_show_the_session_token_or_the_keys(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "SESSIONTOKEN-" + os.urandom(8).hex()
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    client = make_client(endpoint=fault_proxy.endpoint, part_size=5 * 1024 * 1024)
    with caplog.at_level(logging.DEBUG, logger="s3torch"):
        with client.put_object(bucket, "big") as writer:  # multipart: every upload request
            writer.write(os.urandom(11 * 1024 * 1024))
        assert len(client.get_object_stream(bucket, "big").read()) == 11 * 1024 * 1024
        list(client.list_objects(bucket))
        client.copy_object(bucket, "big", bucket, "copy")
        client.delete_objects(bucket, ["copy"])
        with pytest.raises(FileNotFoundError):
            client.head_object(bucket, "missing")
        fault_proxy.fail(500, "InternalError", times=100)
        with pytest.raises(Exception, match="InternalError"):
            make_client(endpoint=fault_proxy.endpoint, max_attempts=2).head_object(bucket, "big")
    assert any(r.headers.get("x-amz-security-token") == token for r in fault_proxy.seen)
    text = caplog.text
    assert "CompleteMultipartUpload" in text  # the upload was logged, request by request
    for secret in (token, os.environ["AWS_SECRET_ACCESS_KEY"], "Security-Token", "Signature="):
        assert secret not in text
