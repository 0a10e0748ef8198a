"""Elastic resume: the states of every share of a stopped job, merged into one any sharding loads.

Share ``i`` of ``S`` reads places ``i, i + S, i + 2S, ...`` of its epoch's
sequence (the listing, or its permutation), in that order; so its state's
``consumed`` count ``c`` says it read the first ``c`` of them. A merged state
records, for each sharding the epoch has run at so far (a *generation*), the
number of shares and each share's count: ``[S, [c_0, ..., c_{S-1}]]``. What
is left of the epoch is the sequence less the places each generation read,
in order; a generation after a resume numbers the places of what was left
to it. A process that loads a merged state deals what is left to its own
shares, equal by its ``shard_balance``; its own states merge again (a
resume of a resume), adding a generation.

The shuffle buffer's order within a share is not a prefix of its places, so
states taken with ``shuffle_buffer_size`` resume only at the same sharding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["STATE_VERSION", "Generation", "merge_states", "remaining_places", "validate_state"]

STATE_VERSION = 2
"""The version of the states written now (version 1 states load too)."""

_VERSIONS = (1, 2)
_REQUIRED = ("version", "epoch", "consumed", "seed", "shuffle")
_SETTINGS = ("shuffle", "seed", "shuffle_buffer_size", "shard_balance")

Generation = tuple[int, tuple[int, ...]]
"""One sharding an epoch ran at: its number of shares, and how many places each read."""


def validate_state(state: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``state`` is an S3IterableDataset state."""
    missing = [key for key in _REQUIRED if key not in state]
    if missing or state["version"] not in _VERSIONS:
        raise ValueError(
            f"not an S3IterableDataset state (missing {sorted(missing)}): {dict(state)!r}"
        )


def history_of(state: Mapping[str, Any]) -> tuple[Generation, ...]:
    """The generations a state's epoch ran at before its own sharding."""
    generations = state.get("history") or ()
    return tuple((int(shares), tuple(int(c) for c in counts)) for shares, counts in generations)


class remaining_places:  # noqa: N801 - used as a function
    """Maps the places of an epoch's sequence (called in order) to their places in what is left.

    None for a place one of ``history``'s generations read.
    """

    def __init__(self, history: Sequence[Generation]) -> None:
        self._history = history
        self._next = [0] * len(history)

    def __call__(self, place: int) -> int | None:
        for number, (shares, counts) in enumerate(self._history):
            if place // shares < counts[place % shares]:
                return None
            place = self._next[number]
            self._next[number] += 1
        return place


def merge_states(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One state from the states of every share of a stopped job, to resume at any sharding.

    ``states`` are :meth:`S3IterableDataset.state_dict` results, one per
    (rank, DataLoader worker) share, or whole ``state_dict()`` results of
    torchdata ``StatefulDataLoader`` s (their workers' dataset states are
    taken from them): typically every rank's, gathered with
    ``torch.distributed.all_gather_object``. Load the result into the
    dataset with :meth:`S3IterableDataset.load_state_dict` before making
    the DataLoader: the next pass reads the rest of the epoch, each object
    that no share had read exactly once across the new ranks and workers
    (and the padding of ``shard_balance="pad"``).

    A share whose process had not started (no shard yet, nothing read) may
    stand in for a share that is missing. A share that finished the epoch
    has moved to the next; its state remembers the finished one.

    Raises:
        ValueError: a state is not an S3IterableDataset state (an
            S3TarDataset's resumes at its own sharding only); the states
            differ in settings or epoch, or are not one job's shares (a
            share twice or missing, different share counts); or they were
            taken with a shuffle buffer.
    """
    expanded = [state for given in states for state in _dataset_states(given)]
    if not expanded:
        raise ValueError("no states to merge")
    for state in expanded:
        validate_state(state)
    if any("samples" in state for state in expanded):
        raise ValueError(
            "cannot merge S3TarDataset states (they resume inside shards): resume each "
            "share at the same ranks and workers instead"
        )
    first = expanded[0]
    for state in expanded[1:]:
        for key in _SETTINGS:
            if state.get(key) != first.get(key):
                raise ValueError(
                    f"cannot merge states taken with {key}={first.get(key)!r} and "
                    f"{key}={state.get(key)!r}"
                )
    if first["shuffle"] and first.get("shuffle_buffer_size") is not None:
        raise ValueError(
            "cannot merge states taken with a shuffle buffer (shuffle_buffer_size): "
            "resume each share at the same ranks and workers instead"
        )
    epoch = min(int(state["epoch"]) for state in expanded)
    views = [_at_epoch(state, epoch) for state in expanded]
    histories = {history for history, _, _ in views}
    if len(histories) > 1:
        raise ValueError("cannot merge states that resumed from different merged states")
    history = histories.pop()
    generation = _generation(views)
    if any(generation[1]):
        history = (*history, generation)
    return {
        "version": STATE_VERSION,
        "epoch": epoch,
        "consumed": 0,
        "shard": None,
        "history": [[shares, list(counts)] for shares, counts in history],
        "finished": None,
        **{key: first.get(key) for key in _SETTINGS},
    }


def _dataset_states(given: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dataset states in a dataset state, or in a StatefulDataLoader's state."""
    if "_snapshot" in given:  # StatefulDataLoader with workers
        workers = given["_snapshot"].get("_worker_snapshots") or {}
        return [snapshot["dataset_state"] for snapshot in workers.values()]
    if "dataset_state" in given and "version" not in given:  # StatefulDataLoader, no workers
        return [given["dataset_state"]]
    return [given]


def _at_epoch(
    state: Mapping[str, Any], epoch: int
) -> tuple[tuple[Generation, ...], tuple[int, int] | None, int]:
    """(history, shard, consumed) of ``state`` in ``epoch``: its own, or the one it finished."""
    shard = tuple(state["shard"]) if state.get("shard") is not None else None
    if int(state["epoch"]) == epoch:
        return history_of(state), shard, int(state["consumed"])
    finished = state.get("finished")
    if finished is not None and int(finished["epoch"]) == epoch and not state["consumed"]:
        return history_of(finished), shard, int(finished["consumed"])
    raise ValueError(
        f"cannot merge states of epochs {epoch} and {state['epoch']}: take every share's "
        "state at the same step"
    )


def _generation(
    views: list[tuple[tuple[Generation, ...], tuple[int, int] | None, int]],
) -> Generation:
    """The sharding the views ran at and each share's count."""
    idle = sum(1 for _, shard, consumed in views if shard is None and not consumed)
    sharded = [(shard or (0, 1), consumed) for _, shard, consumed in views if shard or consumed]
    counts = {count for (_, count), _ in sharded}
    if len(counts) > 1:
        low, high = sorted(counts)[:2]
        raise ValueError(f"cannot merge the states of shares of {low} and of {high}")
    shares = counts.pop() if counts else 1
    consumed: dict[int, int] = {}
    for (index, _), count in sharded:
        if index in consumed:
            raise ValueError(f"share {index} of {shares} appears twice in the states to merge")
        consumed[index] = count
    missing = [index for index in range(shares) if index not in consumed]
    if len(missing) > idle:
        raise ValueError(
            f"share {missing[0]} of {shares} is missing from the states to merge "
            "(pass the states of every rank and DataLoader worker)"
        )
    return shares, tuple(consumed.get(index, 0) for index in range(shares))
