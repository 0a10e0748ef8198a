"""Datasets given one client share it: one pool and one memory budget, never closed by them."""

from __future__ import annotations

import gc
import operator
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from locals3 import FaultProxy
from s3torch.client import S3Client, S3ClientConfig
from s3torch.datasets import S3IterableDataset, S3MapDataset

read = operator.methodcaller("read")

AGENT = "shared-client-test"


def _gets_by_agent(proxy: FaultProxy) -> dict[str, list[str]]:
    """The GET paths the proxy saw, by the user agent that sent them."""
    seen: dict[str, list[str]] = {}
    for request in proxy.seen:
        if request.method == "GET" and "list-type=2" not in request.path:
            agent = "shared" if AGENT in request.headers.get("user-agent", "") else "other"
            seen.setdefault(agent, []).append(request.path.partition("?")[0])
    return seen


def test_datasets_given_one_client_read_through_it_and_leave_it_open(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
) -> None:
    objects = upload(["train/a", "train/b", "val/c"])
    client = S3Client(s3_region, endpoint=fault_proxy.endpoint, user_agent=AGENT)
    fault_proxy.clear()
    train = S3IterableDataset.from_prefix(
        f"s3://{bucket}/train/", region=s3_region, client=client, transform=read
    )
    val = S3MapDataset.from_objects(
        f"s3://{bucket}/val/c", region=s3_region, client=client, transform=read
    )
    assert train.client is client
    assert val.client is client
    assert train.endpoint == val.endpoint == client.endpoint
    assert list(train) == [objects["train/a"], objects["train/b"]]
    assert val[0] == objects["val/c"]
    paths = _gets_by_agent(fault_proxy)
    assert sorted(paths["shared"]) == [
        f"/{bucket}/train/a",
        f"/{bucket}/train/b",
        f"/{bucket}/val/c",
    ]
    assert "other" not in paths  # no client of their own
    del train, val
    gc.collect()
    assert not client.closed
    assert client.head_object(bucket, "val/c").size == len(objects["val/c"])


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_read_with_a_copy_of_the_given_client(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
    start_method: str,
) -> None:
    objects = upload([f"{i}" for i in range(4)], size=1)
    client = S3Client(s3_region, endpoint=fault_proxy.endpoint, user_agent=AGENT)
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", region=s3_region, client=client, transform=read, enable_sharding=True
    )
    # The client pickles as its arguments: the dataset's pickle stays small.
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.client is not client
    assert (copy.client.endpoint, copy.client.user_agent) == (client.endpoint, client.user_agent)
    assert len(pickle.dumps(dataset)) < 4096
    fault_proxy.clear()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=start_method
    )
    assert sorted(loader) == sorted(objects.values())
    paths = _gets_by_agent(fault_proxy)
    assert sorted(paths["shared"]) == [f"/{bucket}/{key}" for key in sorted(objects)]
    assert "other" not in paths
    assert not client.closed


def test_a_client_with_other_settings_is_refused(s3_region: str, s3_endpoint: str) -> None:
    client = S3Client(s3_region, endpoint=s3_endpoint)
    with pytest.raises(ValueError, match="either client or endpoint"):
        S3MapDataset.from_prefix(
            "s3://my-bucket/p", region=s3_region, endpoint=s3_endpoint, client=client
        )
    with pytest.raises(ValueError, match="either client or endpoint"):
        S3IterableDataset.from_objects(
            "s3://my-bucket/k", region=s3_region, s3client_config=S3ClientConfig(), client=client
        )
    with pytest.raises(ValueError, match="region is 'eu-west-3' but the client given is for"):
        S3IterableDataset.from_prefix("s3://my-bucket/p", region="eu-west-3", client=client)
    not_a_client: Any = object()
    with pytest.raises(TypeError, match="client must be an S3Client or None, got object"):
        S3MapDataset.from_objects("s3://my-bucket/k", region=s3_region, client=not_a_client)
