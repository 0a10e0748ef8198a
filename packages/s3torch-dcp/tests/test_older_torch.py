"""What keeps s3torch.dcp working on torch before 2.4 (the package declares torch>=2.3).

torch 2.3 has no ``StorageMeta`` (nor ``Metadata.storage_meta``) and no
``save_id``/``load_id`` helper; its checkpoints' metadata carry no
``storage_meta``. The installed torch is newer, so these tests take those
names away, or write metadata as torch 2.3 does, and check what still works.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import filesystem as torch_filesystem

from s3torch.dcp import S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

IMPORT_WITHOUT_STORAGE_META = """
import torch.distributed.checkpoint.metadata as metadata
del metadata.StorageMeta  # torch 2.3 has none
import s3torch.dcp
print(s3torch.dcp.S3StorageReader.__name__, s3torch.dcp.S3StorageWriter.__name__)
"""


def test_the_package_imports_on_a_torch_without_storage_meta() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_STORAGE_META],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["S3StorageReader", "S3StorageWriter"]


def test_a_save_needs_no_private_torch_helper(
    options: dict[str, Any],
    checkpoint_uri: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = training_state()
    with S3StorageWriter(path=checkpoint_uri, **options) as writer:
        monkeypatch.delattr(torch_filesystem, "_generate_uuid")  # torch 2.3 has none
        writer.reset()
        first = writer.save_id
        # With a checkpoint_id, torch resets the writer again: a new save_id.
        dcp.save(state, storage_writer=writer, checkpoint_id=checkpoint_uri)
        assert str(uuid.UUID(first)) == first
        assert writer.save_id != first
        uuid.UUID(writer.save_id)
        monkeypatch.undo()
    loaded = blank(state)
    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    same(loaded, state)


def test_metadata_without_storage_meta_loads(
    options: dict[str, Any],
    checkpoint_uri: str,
    bucket: str,
    boto3_s3: Any,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
) -> None:
    state = training_state()
    with S3StorageWriter(path=checkpoint_uri, **options) as writer:
        dcp.save(state, storage_writer=writer)
    # Rewrite .metadata as torch 2.3 pickles it: no storage_meta attribute.
    key = checkpoint_uri.removeprefix(f"s3://{bucket}/") + "/.metadata"
    metadata = pickle.loads(boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert vars(metadata).pop("storage_meta") is not None
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=pickle.dumps(metadata))

    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        read = reader.read_metadata()
        assert read.storage_meta is not None
        assert read.storage_meta.load_id == reader.load_id
        loaded = blank(state)
        dcp.load(loaded, storage_reader=reader)
    same(loaded, state)
