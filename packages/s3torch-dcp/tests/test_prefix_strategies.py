"""Prefix strategies: their key layouts, their checks, saves and loads through each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.dcp import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3PrefixStrategyBase,
    S3StorageReader,
    S3StorageWriter,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def test_layouts() -> None:
    assert DefaultPrefixStrategy()(3) == "__3_"
    robin = RoundRobinPrefixStrategy(["a", "b/c"], epoch_num=5)
    assert [robin(rank) for rank in range(3)] == [
        "a/epoch_5/__0_",
        "b/c/epoch_5/__1_",
        "a/epoch_5/__2_",
    ]
    assert RoundRobinPrefixStrategy(["p"])(7) == "p/__7_"
    binary = BinaryPrefixStrategy(min_prefix_length=4, prefix_count=4)
    assert [binary(rank) for rank in range(5)] == [
        "0000/__0_",
        "1000/__1_",
        "0100/__2_",
        "1100/__3_",
        "0000/__4_",
    ]
    assert HexPrefixStrategy(prefix_count=32, min_prefix_length=1)(17) == "11/__17_"
    assert HexPrefixStrategy(epoch_num=2)(0) == "0000000000/epoch_2/__0_"
    assert BinaryPrefixStrategy()(5) == "0000000000/__5_"  # one prefix outside a process group


@pytest.mark.parametrize(
    "bad",
    [
        lambda: RoundRobinPrefixStrategy([]),
        lambda: RoundRobinPrefixStrategy("abc"),
        lambda: RoundRobinPrefixStrategy(["ok", ""]),
        lambda: RoundRobinPrefixStrategy(["a"], epoch_num="1"),
        lambda: HexPrefixStrategy(min_prefix_length=0),
        lambda: BinaryPrefixStrategy(prefix_count=0),
        lambda: BinaryPrefixStrategy(epoch_num=1.5),
        lambda: DefaultPrefixStrategy()(-1),
    ],
)
def test_bad_settings_are_refused(bad: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        bad()


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        # Found by tests-integration/test_fuzz.py: a TypeError naming nothing, or the byte 0.
        (lambda: RoundRobinPrefixStrategy(True), "True"),  # type: ignore[arg-type]
        (lambda: RoundRobinPrefixStrategy(b"\x00"), "b'\\x00'"),
        (lambda: RoundRobinPrefixStrategy(["ok", "\ud800"]), "'\\ud800'"),  # no UTF-8: no key
        (lambda: HexPrefixStrategy(min_prefix_length=1025), "1025"),  # longer than any key
    ],
)
def test_bad_settings_are_refused_naming_the_argument(bad: Callable[[], Any], named: str) -> None:
    with pytest.raises(ValueError, match="must") as raised:
        bad()
    assert named in str(raised.value)


def test_a_huge_prefix_count_costs_nothing_up_front() -> None:
    """Found by the fuzz tests: 10**8 prefixes were built eagerly (74 s, then MemoryError)."""
    strategy = HexPrefixStrategy(min_prefix_length=1, prefix_count=10**12)
    assert strategy(17) == "1100000000/__17_"  # 10 hex digits tell 10**12 prefixes apart
    assert strategy(10**12 + 1) == "1000000000/__1000000000001_"
    assert BinaryPrefixStrategy(min_prefix_length=2, prefix_count=2**40)(6) == (
        "011" + "0" * 37 + "/__6_"
    )


def test_a_custom_strategy(options: dict[str, Any], checkpoint_uri: str, keys_under: Any) -> None:
    class Dated(S3PrefixStrategyBase):
        def generate_prefix(self, rank: int) -> str:
            return f"2026-12-01/rank{rank}-"

    dcp.save(
        {"w": torch.ones(3)},
        storage_writer=S3StorageWriter(path=checkpoint_uri, prefix_strategy=Dated(), **options),
    )
    assert keys_under("ckpt/step-1/") == [".metadata", "2026-12-01/rank0-0.distcp"]


STRATEGIES = {
    "round_robin": (RoundRobinPrefixStrategy(["a", "b"], epoch_num=2), ["a/epoch_2/__0_0.distcp"]),
    "binary": (BinaryPrefixStrategy(min_prefix_length=3), ["000/__0_0.distcp", "000/__0_1.distcp"]),
    "hex": (HexPrefixStrategy(epoch_num=7), ["0000000000/epoch_7/__0_0.distcp"]),
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_saves_and_loads(
    options: dict[str, Any],
    checkpoint_uri: str,
    keys_under: Any,
    same: Callable[[Any, Any], None],
    name: str,
) -> None:
    strategy, files = STRATEGIES[name]
    state = {"a": torch.arange(10.0), "b": torch.ones(2, 2)}
    writer = S3StorageWriter(
        path=checkpoint_uri, prefix_strategy=strategy, thread_count=len(files), **options
    )
    dcp.save(state, storage_writer=writer)
    assert keys_under("ckpt/step-1/") == sorted([".metadata", *files])
    loaded = {"a": torch.zeros(10), "b": torch.zeros(2, 2)}
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    same(loaded, state)


@pytest.mark.parametrize("strategy", [BinaryPrefixStrategy, HexPrefixStrategy])
def test_a_huge_prefix_count_costs_no_memory(
    strategy: type[BinaryPrefixStrategy], options: dict[str, Any], checkpoint_uri: str
) -> None:
    """Prefixes are made per rank: 10**12 of them neither take memory nor time (issue 21)."""
    count = 10**12
    placed = strategy(prefix_count=count, epoch_num=1)
    digits = (count - 1).bit_length() if strategy is BinaryPrefixStrategy else 10
    code = "b" if strategy is BinaryPrefixStrategy else "x"
    last = count - 1
    assert placed(last) == f"{last:0{digits}{code}}"[::-1] + f"/epoch_1/__{last}_"
    assert placed(count + 5).split("/")[0] == placed(5).split("/")[0]  # ranks wrap around
    assert placed(5) == f"{5:0{digits}{code}}"[::-1] + "/epoch_1/__5_"
    state = {"w": torch.arange(6.0)}
    writer = S3StorageWriter(**options, path=checkpoint_uri, prefix_strategy=placed)
    dcp.save(state, storage_writer=writer)
    loaded = {"w": torch.zeros(6)}
    dcp.load(loaded, storage_reader=S3StorageReader(**options, path=checkpoint_uri))
    assert torch.equal(loaded["w"], state["w"])
