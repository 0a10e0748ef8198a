"""Run inside a fresh venv holding one install profile: check its layers, round-trip through each.

    python packaging_probe.py ENDPOINT BUCKET VERSION EXPECTED_LAYERS ALL_LAYERS

Layers are comma-separated names (``client,readers,datasets``). The layers
expected must import and each does one small round trip against the server;
every other layer must not be importable. Standard library only outside s3torch
(the venv holds nothing else we did not install). Prints "ok" at the end.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys

REGION = "us-east-1"


def round_trip(layer: str, endpoint: str, bucket: str) -> None:
    """One write and one read back through ``layer``'s public API."""
    from s3torch.client import S3Client

    client = S3Client(REGION, endpoint=endpoint)
    prefix = f"probe/{layer}"
    if layer == "client":
        with client.put_object(bucket, f"{prefix}/a") as writer:
            writer.write(b"client")
        assert client.get_object_stream(bucket, f"{prefix}/a").read() == b"client"
    elif layer == "readers":
        from s3torch.readers import S3ReaderConstructor, get_object

        with client.put_object(bucket, f"{prefix}/a") as writer:
            writer.write(b"0123456789")
        reader = get_object(
            client, bucket, f"{prefix}/a", reader_constructor=S3ReaderConstructor.range_based()
        )
        reader.seek(4)
        assert reader.read(3) == b"456"
    elif layer == "datasets":
        from s3torch.datasets import S3MapDataset

        for index in range(3):
            with client.put_object(bucket, f"{prefix}/{index}") as writer:
                writer.write(bytes([index]) * 10)
        dataset = S3MapDataset.from_prefix(
            f"s3://{bucket}/{prefix}/", region=REGION, endpoint=endpoint
        )
        assert [dataset[i].read() for i in range(len(dataset))] == [
            bytes([i]) * 10 for i in range(3)
        ]
    elif layer == "checkpoint":
        import torch

        from s3torch.checkpoint import S3Checkpoint

        checkpoint = S3Checkpoint(REGION, endpoint=endpoint)
        with checkpoint.writer(f"s3://{bucket}/{prefix}/m.pt") as writer:
            torch.save({"w": torch.arange(4)}, writer)
        with checkpoint.reader(f"s3://{bucket}/{prefix}/m.pt") as reader:
            assert torch.equal(torch.load(reader)["w"], torch.arange(4))
    elif layer == "dcp":
        import torch
        import torch.distributed.checkpoint as dcp

        from s3torch.dcp import S3StorageReader, S3StorageWriter

        uri = f"s3://{bucket}/{prefix}/ckpt"
        dcp.save(
            {"w": torch.arange(5.0)}, storage_writer=S3StorageWriter(REGION, uri, endpoint=endpoint)
        )
        state = {"w": torch.zeros(5)}
        dcp.load(state, storage_reader=S3StorageReader(REGION, uri, endpoint=endpoint))
        assert torch.equal(state["w"], torch.arange(5.0))
    elif layer == "lightning":
        import fsspec
        import torch

        from s3torch.lightning import S3LightningCheckpoint

        plugin = S3LightningCheckpoint(REGION, endpoint=endpoint)
        plugin.save_checkpoint({"w": torch.ones(3)}, f"s3://{bucket}/{prefix}/last.ckpt")
        assert torch.equal(
            plugin.load_checkpoint(f"s3://{bucket}/{prefix}/last.ckpt")["w"], torch.ones(3)
        )
        listed = fsspec.filesystem("s3").ls(f"s3://{bucket}/{prefix}", detail=False)
        assert listed == [f"{bucket}/{prefix}/last.ckpt"], listed
    else:
        raise AssertionError(f"unknown layer {layer!r}")


def main(endpoint: str, bucket: str, version: str, expected: str, every: str) -> None:
    wanted = set(expected.split(","))
    import s3torch.client

    assert getattr(sys.modules["s3torch"], "__file__", None) is None, "s3torch must be a namespace"
    assert s3torch.client.__version__ == version, s3torch.client.__version__
    if not wanted & {"datasets", "checkpoint", "dcp", "lightning"}:
        import s3torch.readers

        assert "torch" not in sys.modules, "the client and readers must not bring torch"
    for layer in every.split(","):
        name = f"s3torch.{layer}"
        if layer in wanted:
            importlib.import_module(name)
            round_trip(layer, endpoint, bucket)
        else:
            assert importlib.util.find_spec(name) is None, f"{name} should not be installed"
            try:
                importlib.import_module(name)
            except ModuleNotFoundError:
                pass
            else:
                raise AssertionError(f"{name} imported")
    print("ok")


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main(*sys.argv[1:6])
