"""S3TarDataset: WebDataset-style tar shards streamed from S3 into samples.

Shards are written here with Python's ``tarfile`` (and with webdataset's
writer in test_tar_interop.py) and put by boto3, for which moto stores a
CRC32; they are read on the wire through the dataset, a DataLoader, or
torchdata's StatefulDataLoader.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3ChecksumMismatchError
from s3torch.datasets import S3IterableDataset, S3TarDataset, TarShardError, merge_states
from s3torch.datasets._braces import expand_braces
from s3torch.datasets._sample_progress import SampleProgress, runs_of

Put = Callable[..., dict[str, list[dict[str, Any]]]]


def make_tar(samples: list[dict[str, Any]], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive of ``samples`` (``__key__`` and extension -> bytes), by ``tarfile``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for sample in samples:
            for extension, data in sample.items():
                if extension.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                info.size = len(data)
                info.mtime = 1_700_000_000
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_samples(shard: int, count: int, size: int = 1000) -> list[dict[str, Any]]:
    return [
        {
            "__key__": f"{shard:03d}{index:04d}",
            "bin": os.urandom(size),
            "cls": str(index % 7).encode(),
        }
        for index in range(count)
    ]


@pytest.fixture
def put_shards(boto3_s3: Any, bucket: str) -> Put:
    """``put_shards(count, samples=.., size=..)``: ``tars/shard-NNNNNN.tar``; key -> samples."""

    def put(count: int, samples: int = 5, size: int = 1000, prefix: str = "tars/") -> Any:
        shards = {}
        for shard in range(count):
            key = f"{prefix}shard-{shard:06d}.tar"
            shards[key] = make_samples(shard, samples, size)
            boto3_s3.put_object(Bucket=bucket, Key=key, Body=make_tar(shards[key]))
        return shards

    return put


def expected(bucket: str, shards: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {**sample, "__url__": f"s3://{bucket}/{key}"}
        for key, samples in shards.items()
        for sample in samples
    ]


def key_of(sample: dict[str, Any]) -> str:
    return str(sample["__key__"])


# ------------------------------------------------------------------ reading
def test_samples_group_members_by_key_and_carry_the_shard_uri(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    shards = put_shards(3, samples=4)
    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options)
    assert list(dataset) == expected(bucket, shards)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_nested_keys_in_every_tar_format(
    fmt: int, boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    deep = "d" * 60 + "/" + "e" * 60 + "/" + "f" * 30  # > 100 characters: prefix, GNU or PAX
    samples = [
        {"__key__": f"{deep}/0001", "seg.png": b"x" * 700, "json": b"{}"},
        {"__key__": "plain/0002", "txt": b""},  # an empty member is still part of its sample
    ]
    boto3_s3.put_object(Bucket=bucket, Key="s.tar", Body=make_tar(samples, fmt=fmt))
    got = list(S3TarDataset.from_objects(f"s3://{bucket}/s.tar", **options))
    assert got == [{**sample, "__url__": f"s3://{bucket}/s.tar"} for sample in samples]


def test_directories_links_and_nameless_members_are_not_samples(
    boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(_dir("dir"))
        _add(archive, "dir/0001.txt", b"one")
        link = tarfile.TarInfo("dir/0001.lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "0001.txt"
        archive.addfile(link)
        _add(archive, "dir/README", b"no extension")
        _add(archive, "dir/.hidden", b"dot file")
        _add(archive, "dir/0002.txt", b"two")
    boto3_s3.put_object(Bucket=bucket, Key="m.tar", Body=buffer.getvalue())
    got = list(S3TarDataset.from_objects(f"s3://{bucket}/m.tar", **options, transform=_plain))
    assert got == [{"__key__": "dir/0001", "txt": b"one"}, {"__key__": "dir/0002", "txt": b"two"}]


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _plain(sample: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in sample.items() if name != "__url__"}


def test_brace_patterns_name_shards(put_shards: Put, bucket: str, options: dict[str, Any]) -> None:
    shards = put_shards(4, samples=2)
    dataset = S3TarDataset.from_objects(
        [
            f"s3://{bucket}/tars/shard-{{000002..000003}}.tar",
            f"s3://{bucket}/tars/shard-000000.tar",
        ],
        **options,
    )
    order = ["tars/shard-000002.tar", "tars/shard-000003.tar", "tars/shard-000000.tar"]
    assert list(dataset) == expected(bucket, {key: shards[key] for key in order})


def test_expand_braces() -> None:
    assert expand_braces("s3://b/t-{000..003}.tar") == [f"s3://b/t-{n:03d}.tar" for n in range(4)]
    assert expand_braces("s3://b/{a,b}/{8..10}.tar") == [
        "s3://b/a/8.tar",
        "s3://b/a/9.tar",
        "s3://b/a/10.tar",
        "s3://b/b/8.tar",
        "s3://b/b/9.tar",
        "s3://b/b/10.tar",
    ]
    assert expand_braces("s3://b/plain.tar") == ["s3://b/plain.tar"]
    for bad, says in [
        ("s3://b/{5..1}.tar", "backwards"),
        ("s3://b/{x}.tar", "neither a range"),
        ("s3://b/{0..{1..2}}.tar", "unbalanced"),
        ("s3://b/{0..1.tar", "unbalanced"),
    ]:
        with pytest.raises(ValueError, match=says) as raised:
            expand_braces(bad)
        assert bad in str(raised.value)


def test_a_manifest_names_the_shards_with_no_listing(
    put_shards: Put, bucket: str, client: Any, fault_proxy: FaultProxy, s3_region: str
) -> None:
    from s3torch.datasets import write_manifest

    shards = put_shards(3, samples=3)
    write_manifest(f"s3://{bucket}/tars/", f"s3://{bucket}/m.jsonl.gz", client=client)
    dataset = S3TarDataset.from_manifest(
        f"s3://{bucket}/m.jsonl.gz", region=s3_region, endpoint=fault_proxy.endpoint
    )
    fault_proxy.clear()
    assert list(dataset) == expected(bucket, shards)
    assert [r for r in fault_proxy.seen if r.kind is RequestKind.LIST] == []


def test_the_first_sample_comes_before_the_shard_is_downloaded(
    boto3_s3: Any, bucket: str, s3_region: str, fault_proxy: FaultProxy
) -> None:
    samples = make_samples(0, 48, size=1 << 20)  # a 48 MiB shard
    boto3_s3.put_object(Bucket=bucket, Key="big.tar", Body=make_tar(samples))
    dataset = S3TarDataset.from_objects(
        f"s3://{bucket}/big.tar", region=s3_region, endpoint=fault_proxy.endpoint
    )
    fault_proxy.clear()
    iterator = iter(dataset)
    first = next(iterator)
    sent = sum(r.response_bytes for r in fault_proxy.seen if r.kind is RequestKind.GET)
    assert first["bin"] == samples[0]["bin"]
    assert sent < 40 << 20, f"{sent} bytes of a 48 MiB shard were sent before its first sample"
    assert sum(1 for _ in iterator) == 47


# ---------------------------------------------------------- sharding, shuffle
def test_shuffle_reads_the_shards_in_a_new_order_each_epoch_and_every_sample_once(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    put_shards(8, samples=3)
    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, shuffle=True, seed=3)
    orders = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        keys = [key_of(sample) for sample in dataset]
        assert sorted(keys) == sorted(f"{s:03d}{i:04d}" for s in range(8) for i in range(3))
        shards = [key[:3] for key in keys[::3]]
        assert [key[:3] for key in keys] == [shard for shard in shards for _ in range(3)]
        orders.append(shards)
    assert len({tuple(order) for order in orders}) == 3
    again = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, shuffle=True, seed=3)
    again.set_epoch(1)
    assert [key_of(sample)[:3] for sample in again][::3] == orders[1]


def test_a_shuffle_buffer_mixes_samples_across_shards(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    put_shards(4, samples=10)
    dataset = S3TarDataset.from_prefix(
        f"s3://{bucket}/tars/", **options, shuffle=True, shuffle_buffer_size=15
    )
    keys = [key_of(sample) for sample in dataset]
    assert Counter(keys) == Counter(f"{s:03d}{i:04d}" for s in range(4) for i in range(10))
    first_ten = {key[:3] for key in keys[:10]}
    assert len(first_ten) >= 2, keys  # samples of two shards mixed in the first ten
    with pytest.raises(ValueError, match="needs shuffle=True"):
        S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, shuffle_buffer_size=15)


def test_two_workers_read_disjoint_whole_shards(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    shards = put_shards(6, samples=4)
    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, enable_sharding=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    got = list(loader)
    assert sorted(key_of(s) for s in got) == sorted(key_of(s) for s in expected(bucket, shards))
    by_url = Counter(sample["__url__"] for sample in got)
    assert set(by_url.values()) == {4}  # each shard read whole by one worker


# ------------------------------------------------------------------ resuming
@pytest.mark.parametrize("buffer", [None, 7])
def test_state_dict_resumes_mid_shard_at_sample_granularity(
    buffer: int | None, put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    put_shards(5, samples=6)
    settings = {"shuffle": buffer is not None, "shuffle_buffer_size": buffer, "seed": 1}
    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, **settings)
    dataset.set_epoch(2)
    iterator = iter(dataset)
    first = [key_of(next(iterator)) for _ in range(14)]  # mid-way through the third shard
    state = pickle.loads(pickle.dumps(dataset.state_dict()))
    del iterator
    assert state["epoch"] == 2
    if buffer is None:
        assert (state["consumed"], state["samples"]) == (2, {"2": [[0, 2]]})

    resumed = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, **settings)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # keeps the loaded resume point, as for S3IterableDataset
    rest = [key_of(sample) for sample in resumed]
    assert Counter(first + rest) == Counter(f"{s:03d}{i:04d}" for s in range(5) for i in range(6))
    assert resumed.epoch == 3
    assert resumed.state_dict()["samples"] == {}


def test_a_stateful_dataloader_with_workers_resumes_mid_shard(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    put_shards(4, samples=5)

    def loader() -> Any:
        dataset = S3TarDataset.from_prefix(
            f"s3://{bucket}/tars/", **options, enable_sharding=True, transform=key_of
        )
        return StatefulDataLoader(dataset, batch_size=None, num_workers=2)

    first_loader = loader()
    iterator = iter(first_loader)
    first = [next(iterator) for _ in range(7)]
    state = first_loader.state_dict()
    del iterator
    second = loader()
    second.load_state_dict(state)
    rest = list(second)
    assert Counter(first + rest) == Counter(f"{s:03d}{i:04d}" for s in range(4) for i in range(5))


def test_states_are_checked(put_shards: Put, bucket: str, options: dict[str, Any]) -> None:
    put_shards(1)
    tar = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options)
    plain = S3IterableDataset.from_prefix(f"s3://{bucket}/tars/", **options)
    with pytest.raises(ValueError, match="not an S3TarDataset state"):
        tar.load_state_dict(plain.state_dict())
    buffered = S3TarDataset.from_prefix(
        f"s3://{bucket}/tars/", **options, shuffle=True, shuffle_buffer_size=4
    )
    shuffled = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, shuffle=True)
    with pytest.raises(ValueError, match="shuffle_buffer_size=4"):
        shuffled.load_state_dict(buffered.state_dict())
    with pytest.raises(ValueError, match="cannot merge S3TarDataset states"):
        merge_states([tar.state_dict()])


def test_sample_progress_counts_a_shard_done_once_every_sample_is_out() -> None:
    progress = SampleProgress(first=3)
    progress.hand_out(4, 0)  # from the next shard, through a shuffle buffer
    progress.hand_out(3, 1)
    progress.read_to_end(3, 2)
    assert (progress.first, progress.state()) == (3, {"3": [[1, 2]], "4": [[0, 1]]})
    progress.hand_out(3, 0)
    assert (progress.first, progress.state()) == (4, {"4": [[0, 1]]})
    resumed = SampleProgress(4, progress.state())
    assert resumed.was_handed_out(4, 0)
    assert not resumed.was_handed_out(4, 1)
    assert runs_of([5, 1, 2, 3, 7]) == [[1, 4], [5, 6], [7, 8]]


# -------------------------------------------------------------------- errors
def _loader_error(dataset: S3TarDataset, workers: int) -> BaseException:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the type is what is checked
        list(loader)
    return raised.value


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    ("damage", "offset", "says"),
    [
        # cut inside the second member's data (member 0: header 512 + data 1024)
        (lambda tar: tar[: 1536 + 512 + 100], 1536, "truncated: the shard ends inside member"),
        # cut after the last member: no end-of-archive marker
        (lambda tar: tar[: _end_of_members(tar)], None, "without the tar end-of-archive marker"),
        # a flipped byte in the second header: its checksum fails
        (lambda tar: tar[:1600] + b"\xff" + tar[1601:], 1536, "corrupt: not a tar header"),
        (lambda tar: os.urandom(4096), 0, "not a tar archive"),
    ],
    ids=["truncated-member", "no-end-marker", "corrupt-header", "not-a-tar"],
)
def test_a_damaged_shard_raises_naming_the_shard_and_the_offset(
    damage: Callable[[bytes], bytes],
    offset: int | None,
    says: str,
    workers: int,
    boto3_s3: Any,
    bucket: str,
    options: dict[str, Any],
) -> None:
    tar = make_tar([{"__key__": f"{i:04d}", "bin": bytes(1000)} for i in range(3)])
    damaged = damage(tar)
    boto3_s3.put_object(Bucket=bucket, Key="bad.tar", Body=damaged)
    dataset = S3TarDataset.from_objects(f"s3://{bucket}/bad.tar", **options)
    error = _loader_error(dataset, workers)
    assert isinstance(error, TarShardError), repr(error)
    at = offset if offset is not None else _end_of_members(tar)
    assert f"s3://{bucket}/bad.tar" in str(error)
    assert f"byte offset {at}" in str(error)
    assert says in str(error)
    if workers == 0:
        assert (error.uri, error.offset) == (f"s3://{bucket}/bad.tar", at)


def _end_of_members(tar: bytes) -> int:
    """The offset of the end-of-archive marker of a 3-member archive of 1000-byte members."""
    return 3 * (512 + 1024)


def test_a_flipped_byte_in_a_shard_raises_s3_checksum_mismatch_before_its_last_sample(
    boto3_s3: Any, bucket: str, s3_region: str, fault_proxy: FaultProxy
) -> None:
    samples = make_samples(0, 20, size=10_000)
    boto3_s3.put_object(Bucket=bucket, Key="crc.tar", Body=make_tar(samples))
    dataset = S3TarDataset.from_objects(
        f"s3://{bucket}/crc.tar", region=s3_region, endpoint=fault_proxy.endpoint
    )
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET)
    seen: list[str] = []
    with pytest.raises(S3ChecksumMismatchError) as raised:
        seen.extend(key_of(sample) for sample in dataset)
    assert flipped.hits == 1
    assert (raised.value.bucket, raised.value.key) == (bucket, "crc.tar")
    assert len(seen) < 20  # the last sample never went out


def test_a_transform_error_names_the_shard_and_the_sample(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    put_shards(1, samples=3)

    def fussy(sample: dict[str, Any]) -> Any:
        if sample["__key__"].endswith("1"):
            raise KeyError("no label")
        return sample

    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, transform=fussy)
    with pytest.raises(KeyError) as raised:
        list(dataset)
    assert f"s3://{bucket}/tars/shard-000000.tar (sample '0000001')" in "".join(
        getattr(raised.value, "__notes__", [])
    )


def test_a_sample_with_two_members_of_one_extension_is_refused(
    boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add(archive, "0001.txt", b"a")
        _add(archive, "0001.txt", b"b")
    boto3_s3.put_object(Bucket=bucket, Key="dup.tar", Body=buffer.getvalue())
    with pytest.raises(TarShardError, match=r"sample '0001' has two members with extension 'txt'"):
        list(S3TarDataset.from_objects(f"s3://{bucket}/dup.tar", **options))


def test_tar_shard_error_pickles_with_its_fields() -> None:
    error = TarShardError("s3://b/k.tar: bad (at byte offset 512)", uri="s3://b/k.tar", offset=512)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.uri, copy.offset) == (str(error), "s3://b/k.tar", 512)
    assert isinstance(TarShardError(str(error)), ValueError)  # as a DataLoader rebuilds it


# ------------------------------------------------------------- a real job
JOB = Path(__file__).with_name("tar_job.py")


@pytest.mark.parametrize(
    "settings",
    [{}, {"shuffle": True, "shuffle_buffer_size": 6, "seed": 5}],
    ids=["ordered", "shuffled"],
)
def test_two_ranks_of_two_workers_see_every_sample_once_and_resume_the_rest_once(
    settings: dict[str, Any],
    put_shards: Put,
    bucket: str,
    run_ranks: Callable[..., list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    shards = put_shards(8, samples=5, size=200)  # 2 shards for each (rank, worker)
    everything = Counter(key_of(sample) for sample in expected(bucket, shards))
    uri = f"s3://{bucket}/tars/shard-{{000000..000007}}.tar"
    task = {"workers": 2, "stop": 7, "dataset": {"uri": uri, **settings}}
    results = run_ranks(JOB, 2, task, tmp_path)
    assert Counter(key for result in results for key in result["epoch0"]) == everything
    for result in results:
        assert len(result["epoch0"]) == 20  # equal shares: 4 shards of 5 per rank
        assert len(result["first"]) == 7
    resumed = Counter(key for result in results for key in result["first"] + result["rest"])
    assert resumed == everything
    if settings:
        assert results[0]["epoch0"][:7] != results[0]["first"]  # epoch 1 reads another order


def test_a_state_taken_inside_the_first_shard_resumes_only_at_its_own_sharding(
    put_shards: Put, bucket: str, options: dict[str, Any]
) -> None:
    put_shards(2, samples=4)
    dataset = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, enable_sharding=True)
    iterator = iter(dataset)
    next(iterator)
    state = dataset.state_dict()
    del iterator
    assert (state["consumed"], state["samples"], state["shard"]) == (0, {"0": [[0, 1]]}, [0, 1])
    elsewhere = S3TarDataset.from_prefix(f"s3://{bucket}/tars/", **options, enable_sharding=True)
    elsewhere.load_state_dict(state)
    loader = torch.utils.data.DataLoader(elsewhere, batch_size=None, num_workers=2)
    with pytest.raises(ValueError, match="cannot resume: the state was taken in share 0 of 1"):
        list(loader)
