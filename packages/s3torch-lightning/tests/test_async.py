"""Background saves (S3AsyncCheckpointIO, and Lightning's AsyncCheckpointIO) on the test server.

The orderings are made deterministic with a gate: a first save whose
checkpoint blocks ``torch.save`` (in its pickling) until the test releases it,
so the saves queued behind it are known not to have started.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from s3torch.client import S3ClientConfig, S3Exception
from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint


class _Gate:
    """Pickles only when released: holds a save in the middle of its upload."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __reduce__(self) -> tuple[Any, ...]:
        self.entered.set()
        assert self.release.wait(60)
        return (int, (0,))


def _hold_the_saver(io: Any, bucket: str) -> _Gate:
    """Queue a first save that holds the one background thread until the gate is released."""
    gate = _Gate()
    io.save_checkpoint({"gate": gate}, f"s3://{bucket}/held.ckpt")
    assert gate.entered.wait(60)
    return gate


def test_saves_upload_in_the_background_and_teardown_waits(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    io = S3AsyncCheckpointIO(plugin)
    assert isinstance(io, AsyncCheckpointIO)  # what Lightning takes it for
    for step in range(3):
        io.save_checkpoint({"w": torch.full((1000,), float(step))}, f"s3://{bucket}/s{step}.ckpt")
    io.remove_checkpoint(f"s3://{bucket}/s0.ckpt")  # queued, uploading or done: removed after it
    io.teardown()
    assert list_keys() == ["s1.ckpt", "s2.ckpt"]
    assert plugin.load_checkpoint(f"s3://{bucket}/s2.ckpt")["w"][0] == 2.0


def test_removing_a_queued_save_deletes_it_after_the_save_and_does_not_wait(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    uri = f"s3://{bucket}/epoch=0-step=1.ckpt"
    io = S3AsyncCheckpointIO(plugin)
    gate = _hold_the_saver(io, bucket)
    io.save_checkpoint({"step": 1}, uri)  # queued: not started
    io.remove_checkpoint(uri)  # save_top_k drops it; returns although the saver is held
    io.save_checkpoint({"step": 2}, f"s3://{bucket}/epoch=0-step=2.ckpt")
    assert list_keys() == []
    gate.release.set()
    io.teardown()
    assert list_keys() == ["epoch=0-step=2.ckpt", "held.ckpt"]


def test_a_save_queued_after_a_removal_is_kept(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    uri = f"s3://{bucket}/last.ckpt"
    io = S3AsyncCheckpointIO(plugin)
    gate = _hold_the_saver(io, bucket)
    io.save_checkpoint({"step": 1}, uri)
    io.remove_checkpoint(uri)  # removes the save of step 1 ...
    io.save_checkpoint({"step": 2}, uri)  # ... not this later one
    gate.release.set()
    io.teardown()
    assert plugin.load_checkpoint(uri)["step"] == 2


def test_a_load_waits_for_the_queued_save_of_its_path(
    plugin: S3LightningCheckpoint, bucket: str
) -> None:
    uri = f"s3://{bucket}/last.ckpt"
    plugin.save_checkpoint({"step": 1}, uri)  # an older checkpoint at the same key
    io = S3AsyncCheckpointIO(plugin)
    gate = _hold_the_saver(io, bucket)
    io.save_checkpoint({"step": 2}, uri)  # queued behind the held save
    loaded: list[dict[str, Any]] = []
    loading = threading.Thread(target=lambda: loaded.append(io.load_checkpoint(uri)))
    loading.start()
    loading.join(1.0)
    assert loading.is_alive()  # waiting for the queued save, not reading step 1
    gate.release.set()
    loading.join(60)
    assert not loading.is_alive()
    assert loaded == [{"step": 2}]
    io.teardown()


def test_a_load_of_another_path_does_not_wait(plugin: S3LightningCheckpoint, bucket: str) -> None:
    plugin.save_checkpoint({"step": 1}, f"s3://{bucket}/other.ckpt")
    io = S3AsyncCheckpointIO(plugin)
    gate = _hold_the_saver(io, bucket)
    io.save_checkpoint({"step": 2}, f"s3://{bucket}/last.ckpt")
    assert io.load_checkpoint(f"s3://{bucket}/other.ckpt") == {"step": 1}
    gate.release.set()
    io.teardown()


def test_removing_a_checkpoint_while_it_uploads_deletes_it_when_the_upload_ends(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    """Also without the wrapper: a save on another thread of the plugin itself."""
    uri = f"s3://{bucket}/step=1.ckpt"
    plugin.save_checkpoint({"step": 0}, uri)  # an older object at the same key
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


@pytest.mark.parametrize(
    ("path", "options", "error", "message"),
    [
        ("gs://b/x.ckpt", None, ValueError, "gs://b/x.ckpt"),
        (None, None, TypeError, "None"),
        ("s3://b/x.ckpt", {"a": 1}, TypeError, "storage_options"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_queued(
    plugin: S3LightningCheckpoint, path: Any, options: Any, error: type[Exception], message: str
) -> None:
    io = S3AsyncCheckpointIO(plugin)
    with pytest.raises(error, match=message):
        io.save_checkpoint({"step": 1}, path, options)
    io.teardown()  # nothing failed in the background


def test_only_an_s3_lightning_checkpoint_is_wrapped() -> None:
    with pytest.raises(TypeError, match="S3LightningCheckpoint"):
        S3AsyncCheckpointIO(None)  # type: ignore[arg-type]


class _Started:
    """Counts the saves that began: a save pickles its checkpoint when it runs."""

    def __init__(self) -> None:
        self.count = threading.Semaphore(0)

    def __reduce__(self) -> tuple[Any, ...]:
        self.count.release()
        return (int, (0,))


@pytest.mark.parametrize("wrapper", [S3AsyncCheckpointIO, AsyncCheckpointIO])
def test_a_failed_upload_surfaces_on_the_next_save_and_at_teardown(
    fault_proxy: Any, s3_region: str, bucket: str, list_keys: Any, wrapper: Any
) -> None:
    plugin = S3LightningCheckpoint(
        s3_region, S3ClientConfig(max_attempts=1), endpoint=fault_proxy.endpoint
    )
    fault_proxy.fail(500, "InternalError", times=1, when=lambda request: request.method == "PUT")
    io = wrapper(plugin)
    started = _Started()
    surfaced: list[BaseException] = []
    submitted: list[str] = []
    # "a" fails in the background. Its error surfaces at the latest on the save
    # after it has finished, or on its own call when it failed before that call
    # returned (both wrappers look for an error right after submitting).
    for name in ("a", "b", "c"):
        submitted.append(name)
        try:
            io.save_checkpoint({"s": started}, f"s3://{bucket}/{name}.ckpt")
        except S3Exception as error:
            surfaced.append(error)
            break
        assert started.count.acquire(timeout=60)  # this save began: the ones before are settled
    assert surfaced, submitted
    assert "InternalError" in str(surfaced[0])
    with pytest.raises(S3Exception, match="InternalError"):
        io.teardown()  # waits for the saves in flight, and reports the failure again
    keys = list_keys()
    assert "a.ckpt" not in keys  # the failed save left nothing
    assert [f"{name}.ckpt" for name in submitted[1:]] == sorted(set(keys) & {"b.ckpt", "c.ckpt"})
    if wrapper is S3AsyncCheckpointIO:
        io.teardown()  # raised once: the next run starts clean
        io.save_checkpoint({"w": torch.ones(10)}, f"s3://{bucket}/d.ckpt")
        io.teardown()
        assert "d.ckpt" in list_keys()


def test_lightnings_async_checkpoint_io_cannot_order_a_removal_after_a_queued_save(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    """Why docs/lightning.md recommends S3AsyncCheckpointIO: the plugin never hears of the save."""
    io = AsyncCheckpointIO(plugin)
    gate = _hold_the_saver(io, bucket)
    io.save_checkpoint({"step": 1}, f"s3://{bucket}/epoch=0-step=1.ckpt")
    io.remove_checkpoint(f"s3://{bucket}/epoch=0-step=1.ckpt")
    gate.release.set()
    io.teardown()
    assert list_keys() == ["epoch=0-step=1.ckpt", "held.ckpt"]  # the removed one is back
