"""S3LightningCheckpoint's CheckpointIO methods on the test server, sync and asynchronous."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch

from s3torch.client import S3ClientConfig
from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint, use_client


def _state() -> dict[str, Any]:
    return {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "note": "hi"}


def test_save_load_remove(plugin: S3LightningCheckpoint, bucket: str, list_keys: Any) -> None:
    uri = f"s3://{bucket}/run/epoch=3.ckpt"
    plugin.save_checkpoint(_state(), uri)
    assert list_keys() == ["run/epoch=3.ckpt"]
    loaded = plugin.load_checkpoint(uri)
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(6.0).reshape(2, 3))
    assert (loaded["epoch"], loaded["note"]) == (3, "hi")
    plugin.remove_checkpoint(uri)
    assert list_keys() == []
    plugin.remove_checkpoint(uri)  # already gone: no error
    plugin.teardown()
    plugin.save_checkpoint(_state(), uri)  # still usable after teardown (fit, then test)
    assert list_keys() == ["run/epoch=3.ckpt"]


def test_map_location_and_weights_only(plugin: S3LightningCheckpoint, bucket: str) -> None:
    uri = f"s3://{bucket}/x.ckpt"
    plugin.save_checkpoint({"w": torch.ones(2), "made_by": Path("/tmp")}, uri)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        plugin.load_checkpoint(uri, weights_only=True)
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        plugin.load_checkpoint(uri)  # None: torch's default, weights only
    loaded = plugin.load_checkpoint(uri, map_location="cpu", weights_only=False)
    assert loaded["made_by"] == Path("/tmp")
    assert loaded["w"].device.type == "cpu"
    plugin.save_checkpoint({"w": torch.ones(2)}, uri)
    assert torch.equal(plugin.load_checkpoint(uri, weights_only=True)["w"], torch.ones(2))


def test_loading_a_missing_checkpoint_is_file_not_found(
    plugin: S3LightningCheckpoint, bucket: str
) -> None:
    with pytest.raises(FileNotFoundError, match=f"{bucket}.*missing.ckpt"):
        plugin.load_checkpoint(f"s3://{bucket}/missing.ckpt")


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (None, TypeError, "None"),
        (b"s3://my-bucket/x.ckpt", TypeError, "bytes"),
        ("file:///tmp/x.ckpt", ValueError, "file:///tmp/x.ckpt"),
        ("s3:/my-bucket/x.ckpt", ValueError, "os.path.normpath"),
        ("s3://", ValueError, "s3://"),
        ("s3://my-bucket", ValueError, "names a bucket, not an object"),
        ("gs://my-bucket/x.ckpt", ValueError, "gs://my-bucket/x.ckpt"),
    ],
)
def test_bad_paths_are_refused_by_name(
    plugin: S3LightningCheckpoint, path: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        plugin.save_checkpoint(_state(), path)
    with pytest.raises(error, match=message):
        plugin.load_checkpoint(path)
    with pytest.raises(error, match=message):
        plugin.remove_checkpoint(path)


@pytest.mark.parametrize("kind", [str, Path])
def test_local_paths_are_saved_loaded_and_removed_on_disk(
    plugin: S3LightningCheckpoint, tmp_path: Path, kind: type, list_keys: Any
) -> None:
    """As Lightning's own CheckpointIO does: its spawn launchers hand over a local temp file."""
    path = kind(tmp_path / "weights" / ".temp.ckpt")
    plugin.save_checkpoint(_state(), path)
    assert torch.load(tmp_path / "weights" / ".temp.ckpt")["epoch"] == 3
    assert torch.equal(plugin.load_checkpoint(path)["state_dict"]["w"], _state()["state_dict"]["w"])
    plugin.remove_checkpoint(path)
    assert not (tmp_path / "weights" / ".temp.ckpt").exists()
    plugin.remove_checkpoint(path)  # already gone: no error
    with pytest.raises(FileNotFoundError):
        plugin.load_checkpoint(path)
    assert list_keys() == []


def test_storage_options_are_refused(plugin: S3LightningCheckpoint, bucket: str) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        plugin.save_checkpoint(_state(), f"s3://{bucket}/x.ckpt", storage_options={"a": 1})


def test_a_failing_save_leaves_no_object_and_keeps_the_old_one(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    uri = f"s3://{bucket}/run/last.ckpt"
    plugin.save_checkpoint(_state(), uri)
    with pytest.raises(Exception, match=r"lambda|pickle"):
        plugin.save_checkpoint({"w": torch.ones(1 << 20), "bad": lambda: None}, uri)
    assert list_keys() == ["run/last.ckpt"]
    assert plugin.load_checkpoint(uri)["epoch"] == 3  # the previous checkpoint, intact
    with pytest.raises(Exception, match=r"lambda|pickle"):
        plugin.save_checkpoint({"bad": lambda: None}, f"s3://{bucket}/run/new.ckpt")
    assert list_keys() == ["run/last.ckpt"]


def test_shares_a_given_client_and_never_closes_it(
    make_client: Any, s3_region: str, bucket: str, list_keys: Any
) -> None:
    client = make_client()
    plugin = S3LightningCheckpoint(s3_region, client=client)
    assert plugin.client is client
    plugin.save_checkpoint(_state(), f"s3://{bucket}/a.ckpt")
    plugin.teardown()
    plugin.close()
    with plugin:
        pass
    assert not client.closed
    assert plugin.client is client
    assert plugin.load_checkpoint(f"s3://{bucket}/a.ckpt")["epoch"] == 3
    assert list_keys() == ["a.ckpt"]


def test_closes_the_client_it_made_and_makes_another_on_next_use(
    s3_region: str, s3_endpoint: str, bucket: str
) -> None:
    plugin = S3LightningCheckpoint(s3_region, endpoint=s3_endpoint)
    first = plugin.client
    plugin.save_checkpoint(_state(), f"s3://{bucket}/a.ckpt")
    plugin.teardown()
    assert first.closed
    assert plugin.load_checkpoint(f"s3://{bucket}/a.ckpt")["epoch"] == 3  # fit, then test
    second = plugin.client
    assert second is not first
    assert not second.closed
    assert second.endpoint == s3_endpoint
    with plugin:
        pass
    assert second.closed
    plugin.close()  # idempotent


def test_a_shared_client_follows_the_rule_of_every_entry_point(
    make_client: Any, s3_region: str, s3_endpoint: str
) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="either client or endpoint/s3client_config"):
        S3LightningCheckpoint(s3_region, endpoint=s3_endpoint, client=client)
    with pytest.raises(ValueError, match="either client or endpoint/s3client_config"):
        S3LightningCheckpoint(s3_region, S3ClientConfig(max_attempts=2), client=client)
    with pytest.raises(ValueError, match=f"region is 'eu-west-1' but the client.*{s3_region}"):
        S3LightningCheckpoint("eu-west-1", client=client)
    with pytest.raises(TypeError, match="S3Client"):
        S3LightningCheckpoint(s3_region, client="not a client")  # type: ignore[arg-type]
    assert not client.closed


def test_find_last_checkpoint(plugin: S3LightningCheckpoint, bucket: str, boto3_s3: Any) -> None:
    assert plugin.find_last_checkpoint(f"s3://{bucket}/run") is None
    for key in ("run/v0/checkpoints/last.ckpt", "run/v0/checkpoints/epoch=1.ckpt"):
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert plugin.find_last_checkpoint(f"s3://{bucket}/run") == (
        f"s3://{bucket}/run/v0/checkpoints/last.ckpt"
    )
    # a newer last checkpoint in a later version wins (LastModified, then key)
    boto3_s3.put_object(Bucket=bucket, Key="run/v1/checkpoints/last-v1.ckpt", Body=b"x")
    assert plugin.find_last_checkpoint(f"s3://{bucket}/run/") == (
        f"s3://{bucket}/run/v1/checkpoints/last-v1.ckpt"
    )
    assert plugin.find_last_checkpoint(f"s3://{bucket}/runs") is None  # prefix, not name
    with pytest.raises(TypeError, match="prefix"):
        plugin.find_last_checkpoint(Path("/x"))  # type: ignore[arg-type]


def test_importing_without_lightning_names_the_package_to_install() -> None:
    probe = (
        "import sys\n"
        "sys.modules['lightning'] = None\n"
        "try:\n"
        "    import s3torch.lightning\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    assert "pip install s3torch-lightning" in result.stdout, result.stdout + result.stderr


def test_pickles_as_its_settings_and_the_copy_serves_fsspec_s3(
    s3_region: str, s3_endpoint: str, bucket: str, boto3_s3: Any
) -> None:
    """What Lightning's ddp_spawn does with the trainer, in one process."""
    config = S3ClientConfig(part_size=5 * 1024 * 1024, max_attempts=3)
    plugin = S3LightningCheckpoint(s3_region, config, s3_endpoint)
    try:
        use_client(None)  # as in a fresh process: fsspec's s3:// knows no plugin
        copy = pickle.loads(pickle.dumps(plugin))
        assert copy.client is not plugin.client
        assert (copy.region, copy.client.endpoint) == (s3_region, s3_endpoint)
        assert copy.client.s3client_config == config
        assert fsspec.filesystem("s3").client is copy.client  # Lightning's directories
        copy.save_checkpoint(_state(), f"s3://{bucket}/copy.ckpt")
        assert plugin.load_checkpoint(f"s3://{bucket}/copy.ckpt")["epoch"] == 3
        boto3_s3.put_object(Bucket=bucket, Key="logs/x", Body=b"x")
        assert fsspec.filesystem("s3").ls(f"s3://{bucket}/logs", detail=False) == [
            f"{bucket}/logs/x"
        ]
        copy.teardown()
        assert not plugin.client.closed
    finally:
        use_client(None)


def test_a_plugin_with_a_given_client_pickles_to_one_that_owns_a_like_client(
    make_client: Any, s3_region: str, s3_endpoint: str, bucket: str
) -> None:
    """A client cannot cross a process: the copy makes its own, with the same settings."""
    given = make_client(max_attempts=2)
    plugin = S3LightningCheckpoint(s3_region, client=given)
    try:
        copy = pickle.loads(pickle.dumps(plugin))
        own = copy.client
        assert own is not given
        assert (own.endpoint, own.s3client_config) == (s3_endpoint, given.s3client_config)
        copy.save_checkpoint(_state(), f"s3://{bucket}/a.ckpt")
        copy.teardown()
        assert own.closed  # the copy's own client
        assert not given.closed
        assert plugin.load_checkpoint(f"s3://{bucket}/a.ckpt")["epoch"] == 3
        again = copy.client  # made anew after teardown, with the same settings
        assert again is not own
        assert (again.endpoint, again.s3client_config) == (s3_endpoint, given.s3client_config)
        assert copy.load_checkpoint(f"s3://{bucket}/a.ckpt")["epoch"] == 3
    finally:
        use_client(None)


def test_the_async_wrapper_pickles_with_its_plugin(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    io = pickle.loads(pickle.dumps(S3AsyncCheckpointIO(plugin)))
    assert isinstance(io.plugin, S3LightningCheckpoint)
    io.save_checkpoint(_state(), f"s3://{bucket}/a.ckpt")
    io.teardown()
    assert list_keys() == ["a.ckpt"]
