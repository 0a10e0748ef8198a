"""S3LightningCheckpoint's CheckpointIO methods on the test server, sync and asynchronous."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from s3torch.client import S3ClientConfig, S3Exception
from s3torch.lightning import S3LightningCheckpoint


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
        (Path("/tmp/x.ckpt"), TypeError, "PosixPath"),
        (None, TypeError, "None"),
        ("/tmp/x.ckpt", ValueError, "/tmp/x.ckpt"),
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


def test_shares_a_given_client(make_client: Any, bucket: str, list_keys: Any) -> None:
    client = make_client()
    plugin = S3LightningCheckpoint("us-east-1", client=client)
    assert plugin.client is client
    plugin.save_checkpoint(_state(), f"s3://{bucket}/a.ckpt")
    plugin.teardown()
    assert not client.closed
    assert list_keys() == ["a.ckpt"]
    with pytest.raises(TypeError, match="S3Client"):
        S3LightningCheckpoint("us-east-1", client="not a client")  # type: ignore[arg-type]


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


class _SignallingCheckpoint(S3LightningCheckpoint):
    """Tells the test when each save starts on AsyncCheckpointIO's one background thread.

    When a save starts, the one before it has finished and its outcome is recorded.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Semaphore(0)

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        self.started.release()
        super().save_checkpoint(*args, **kwargs)


def test_async_saves_upload_in_the_background_and_teardown_waits(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    io = AsyncCheckpointIO(plugin)
    for step in range(3):
        io.save_checkpoint({"w": torch.full((1000,), float(step))}, f"s3://{bucket}/s{step}.ckpt")
    io.remove_checkpoint(f"s3://{bucket}/s0.ckpt")  # waits for that save if still uploading
    io.teardown()
    assert list_keys() == ["s1.ckpt", "s2.ckpt"]
    assert plugin.load_checkpoint(f"s3://{bucket}/s2.ckpt")["w"][0] == 2.0


class _Gate:
    """Pickles only when released: holds a save in the middle of its upload."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __reduce__(self) -> tuple[Any, ...]:
        self.entered.set()
        assert self.release.wait(60)
        return (int, (0,))


def test_removing_a_checkpoint_while_it_uploads_deletes_it_when_the_upload_ends(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    uri = f"s3://{bucket}/step=1.ckpt"
    plugin.save_checkpoint(_state(), uri)  # an older object at the same key
    gate = _Gate()
    saving = threading.Thread(target=plugin.save_checkpoint, args=({"gate": gate}, uri))
    saving.start()
    assert gate.entered.wait(60)
    plugin.remove_checkpoint(uri)  # returns at once: the loop does not wait for the upload
    assert list_keys() == ["step=1.ckpt"]
    gate.release.set()
    saving.join(60)
    assert not saving.is_alive()
    assert list_keys() == []  # deleted after the upload, not before it


def test_a_failed_async_upload_surfaces_on_the_next_save_and_at_teardown(
    fault_proxy: Any, s3_region: str, bucket: str, list_keys: Any
) -> None:
    plugin = _SignallingCheckpoint(
        s3_region, S3ClientConfig(max_attempts=1), endpoint=fault_proxy.endpoint
    )
    fault_proxy.fail(500, "InternalError", times=1, when=lambda request: request.method == "PUT")
    io = AsyncCheckpointIO(plugin)
    io.save_checkpoint({"w": torch.ones(10)}, f"s3://{bucket}/a.ckpt")  # fails in the background
    assert plugin.started.acquire(timeout=60)
    surfaced: list[BaseException] = []
    for name in ("b", "c"):  # at the latest on the save after the failed one has finished
        try:
            io.save_checkpoint({"w": torch.ones(10)}, f"s3://{bucket}/{name}.ckpt")
        except S3Exception as error:
            surfaced.append(error)
            break
        assert plugin.started.acquire(timeout=60)  # this save began: the failed one is settled
    assert surfaced
    assert "InternalError" in str(surfaced[0])
    with pytest.raises(S3Exception, match="InternalError"):
        io.teardown()  # waits for the saves in flight, and reports the failure again
    assert "a.ckpt" not in list_keys()  # the failed save left nothing
    assert "b.ckpt" in list_keys()  # the saves after it still landed


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
