"""Prefix strategies: where under the checkpoint each rank's files go.

S3 scales request rates per key prefix. A job of many ranks writing one
checkpoint can spread its files over several prefixes so that no single prefix
is throttled. A strategy maps a rank to the start of its files' keys, relative
to the checkpoint path; file ``i`` of that rank is ``<prefix><i>.distcp``.

The layouts are those of the reference connector (``s3torchconnector.dcp``),
so a checkpoint written by either loads with the other: the metadata file
records every file's relative key.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch.distributed as dist

from s3torch.client import require_int

_MAX_KEY_BYTES = 1024  # S3's limit on a key, in bytes of UTF-8

__all__ = [
    "BinaryPrefixStrategy",
    "DefaultPrefixStrategy",
    "HexPrefixStrategy",
    "RoundRobinPrefixStrategy",
    "S3PrefixStrategyBase",
]


class S3PrefixStrategyBase(abc.ABC):
    """Maps a rank to the key prefix of its checkpoint files: ``strategy(rank) -> str``.

    Subclasses implement :meth:`generate_prefix`. A prefix must be unique per
    rank (ranks must never write the same keys) and end with the part that
    file numbers are appended to, e.g. ``"__3_"``.
    """

    def __call__(self, rank: int) -> str:
        """The prefix of ``rank``'s files (see :meth:`generate_prefix`)."""
        require_int("rank", rank)
        return self.generate_prefix(rank)

    @abc.abstractmethod
    def generate_prefix(self, rank: int) -> str:
        """The key prefix, relative to the checkpoint path, of ``rank``'s files."""


class DefaultPrefixStrategy(S3PrefixStrategyBase):
    """All files directly under the checkpoint path: ``__<rank>_`` (torch's own layout)."""

    def generate_prefix(self, rank: int) -> str:
        return f"__{rank}_"


def _check_epoch(epoch_num: int | None) -> None:
    if epoch_num is not None and (isinstance(epoch_num, bool) or not isinstance(epoch_num, int)):
        raise ValueError(f"epoch_num must be None or an int, got {epoch_num!r}")


def _epoch_part(epoch_num: int | None) -> str:
    return "" if epoch_num is None else f"epoch_{epoch_num}/"


class RoundRobinPrefixStrategy(S3PrefixStrategyBase):
    """Ranks spread over your prefixes in turn: ``<user_prefix>/[epoch_<n>/]__<rank>_``.

    Args:
        user_prefixes: The prefixes to use (at least one); rank ``r`` gets
            ``user_prefixes[r % len(user_prefixes)]``.
        epoch_num: Adds ``epoch_<n>/`` below the prefix, if given.

    Example::

        RoundRobinPrefixStrategy(["shard-a", "shard-b"], epoch_num=3)(1)
        # 'shard-b/epoch_3/__1_'
    """

    def __init__(self, user_prefixes: Sequence[str], epoch_num: int | None = None) -> None:
        if (
            isinstance(user_prefixes, (str, bytes, bytearray))
            or not isinstance(user_prefixes, Sequence)
            or not user_prefixes
        ):
            raise ValueError(
                f"user_prefixes must be a non-empty list of strings, got {user_prefixes!r}"
            )
        for prefix in user_prefixes:
            if not isinstance(prefix, str) or not prefix.strip("/"):
                raise ValueError(f"user_prefixes must hold non-empty strings, got {prefix!r}")
            try:
                prefix.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"user_prefixes must hold UTF-8 text (S3 keys are), got {prefix!r}"
                ) from None
        _check_epoch(epoch_num)
        self.user_prefixes = list(user_prefixes)
        self.epoch_num = epoch_num

    def generate_prefix(self, rank: int) -> str:
        user_prefix = self.user_prefixes[rank % len(self.user_prefixes)]
        return f"{user_prefix}/{_epoch_part(self.epoch_num)}__{rank}_"


class _NumericPrefixStrategy(S3PrefixStrategyBase):
    """Prefixes made of the digits of a number in some base, least significant digit first.

    Reversing the digits makes neighbouring ranks differ in their first
    character, which is what spreads them over S3's key partitions.
    """

    base = 10

    def __init__(
        self,
        epoch_num: int | None = None,
        min_prefix_length: int = 10,
        prefix_count: int | None = None,
    ) -> None:
        _check_epoch(epoch_num)
        require_int("min_prefix_length", min_prefix_length, minimum=1)
        if min_prefix_length > _MAX_KEY_BYTES:
            raise ValueError(
                f"min_prefix_length must be at most {_MAX_KEY_BYTES} (S3's key limit in "
                f"bytes), got {min_prefix_length!r}"
            )
        require_int("prefix_count", prefix_count, minimum=1, optional=True)
        self.epoch_num = epoch_num
        self.min_prefix_length = min_prefix_length
        # None: the world size, if a process group exists now (as the reference does).
        if prefix_count is None:
            prefix_count = dist.get_world_size() if dist.is_initialized() else 1
        self.prefix_count = prefix_count
        self.prefix_length = max(self._length_for(prefix_count), min_prefix_length)

    def _digits(self, number: int, length: int) -> str:
        return f"{number:0{length}{self._format_code}}"

    _format_code = "d"

    def _length_for(self, count: int) -> int:
        """The digits that ``count`` distinct prefixes need (at least one)."""
        length, capacity = 1, self.base
        while capacity < count:
            length, capacity = length + 1, capacity * self.base
        return length

    def generate_prefix(self, rank: int) -> str:
        # Made per rank, not listed up front: any prefix_count costs nothing
        # (a list of 10**12 prefixes ran out of memory).
        numeric = self._digits(rank % self.prefix_count, self.prefix_length)[::-1]
        return f"{numeric}/{_epoch_part(self.epoch_num)}__{rank}_"


class BinaryPrefixStrategy(_NumericPrefixStrategy):
    """Binary prefixes: ``<reversed binary of rank % prefix_count>/[epoch_<n>/]__<rank>_``.

    Args:
        epoch_num: Adds ``epoch_<n>/`` below the prefix, if given.
        min_prefix_length: Digits at least (padded with zeros; default 10).
        prefix_count: Distinct prefixes (default: the world size when the
            strategy is made inside a process group, else 1).

    Example::

        BinaryPrefixStrategy(min_prefix_length=4, prefix_count=4)(1)  # '1000/__1_'
    """

    base = 2
    _format_code = "b"


class HexPrefixStrategy(_NumericPrefixStrategy):
    """Hex prefixes: ``<reversed hex of rank % prefix_count>/[epoch_<n>/]__<rank>_``.

    The arguments are those of :class:`BinaryPrefixStrategy`; 16 prefixes
    fit in one character.

    Example::

        HexPrefixStrategy(min_prefix_length=4, prefix_count=32)(17)  # '1100/__17_'
    """

    base = 16
    _format_code = "x"
