"""What an iterable dataset over S3 objects does each pass: shard, shuffle, count, resume.

:class:`ObjectPasses` is the machinery behind :class:`~.S3IterableDataset`
and :class:`~.S3TarDataset`: which objects a (rank, DataLoader worker) reads
in an epoch and in what order, the epoch, and the state that resumes it. A
subclass says what a pass yields from those objects (:meth:`ObjectPasses._read_pass`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch.utils.data

from s3torch.client import S3Client, S3ClientConfig, require_int
from s3torch.readers import S3Reader, S3ReaderConstructorProtocol

from ._balance import Balance, balanced, balanced_slice, check_balance
from ._base import DEFAULT_PREFETCH, DatasetSource, S3DatasetBase, identity
from ._order import Deal, buffer_shuffled, every, round_robin, skip_first
from ._resume import STATE_VERSION, Generation, history_of, remaining_places, validate_state
from ._sharding import Shard, current_shard, distributed_rank
from ._shared_listing import Keep, kept
from ._source import DatasetObject

__all__ = ["ObjectPasses"]

log = logging.getLogger(__name__)


class ObjectPasses(S3DatasetBase, torch.utils.data.IterableDataset[Any]):
    """An iterable dataset's passes over its objects (see :class:`~.S3IterableDataset`).

    Subclasses implement :meth:`_read_pass`, which yields what a pass hands
    out from the objects it is given and counts ``_consumed``.
    """

    def __init__(
        self,
        region: str,
        get_dataset_objects: DatasetSource,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> None:
        super().__init__(
            region,
            get_dataset_objects,
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            client=client,
        )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        require_int("shuffle_buffer_size", shuffle_buffer_size, minimum=1, optional=True)
        self._enable_sharding = bool(enable_sharding)
        self._shard_balance = check_balance(shard_balance)
        self._cache_listing = bool(cache_listing)
        self._passes = 0  # passes started in this process (see _generation)
        self._shuffle = bool(shuffle)
        self._seed = seed
        self._shuffle_buffer_size = shuffle_buffer_size
        self._epoch = 0
        self._consumed = 0  # objects handed out in this epoch, by this process
        self._resume_from = 0  # objects to skip at the start of the next pass
        self._shard: Shard | None = None  # of the current or last pass
        # The whole listing (key None), or one share of it (key: shard, balance).
        self._listing: tuple[tuple[Shard, Balance] | None, list[DatasetObject]] | None = None
        self._history: tuple[Generation, ...] = ()  # of this epoch, from a merged state
        self._finished: dict[str, Any] | None = None  # the last epoch a pass completed
        self._loaded = False  # a state was loaded and no pass has started since
        self._parent_rank: tuple[int, int] | None = None  # see __getstate__

    # ------------------------------------------------------------- settings
    @property
    def enable_sharding(self) -> bool:
        return self._enable_sharding

    @property
    def shard_balance(self) -> Balance | None:
        """How shares are made equal: ``"pad"``, ``"drop"``, ``"uneven"``, or None (the default).

        None is ``"pad"`` when iteration starts with a process group of more
        than one rank, ``"uneven"`` otherwise.
        """
        return self._shard_balance

    @property
    def shuffle(self) -> bool:
        return self._shuffle

    @property
    def epoch(self) -> int:
        """The epoch of the current (or next) pass: it seeds the shuffle."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` with the next pass (a different shuffle each epoch).

        The epoch of a state just loaded (see :meth:`load_state_dict`) keeps
        its resume point, so a training loop may call ``set_epoch`` first.

        With a process group of several ranks, a collective: call it on every
        rank. A dataset from a prefix is listed there once for the job, for
        the passes until the next ``set_epoch`` (only the first, with
        ``cache_listing``).

        Raises:
            S3Exception: the job's listing failed (the same error on every rank).
        """
        require_int("epoch", epoch)
        if not (self._loaded and epoch == self._epoch):
            if self._finished is not None and self._finished["epoch"] + 1 != epoch:
                self._finished = None
            self._epoch = epoch
            self._consumed = self._resume_from = 0
            self._history = ()
            self._loaded = False
        # A collective point (see docs/datasets.md): every rank passes here,
        # whether or not it keeps a resume point.
        if not (self._cache_listing and self._job_listings):
            self._list_for_job()

    # ----------------------------------------------------------- resumption
    def state_dict(self) -> dict[str, Any]:
        """Where this process is: epoch, objects consumed in it, and its shard.

        Also what an elastic resume needs (see
        :func:`~s3torch.datasets.merge_states`): the shardings this epoch ran
        at before, if it was resumed from a merged state (``history``), and
        the epoch this process last completed (``finished``).
        """
        shard = self._shard
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "consumed": self._consumed,
            "shard": [shard.index, shard.count] if shard is not None else None,
            "seed": self._seed,
            "shuffle": self._shuffle,
            "shuffle_buffer_size": self._shuffle_buffer_size,
            "shard_balance": self._shard_balance,
            "history": _history_state(self._history),
            "finished": self._finished,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume where :meth:`state_dict` was taken: the next pass skips what was consumed.

        ``state`` is this process's own state (resume at the same ranks and
        workers), or :func:`~s3torch.datasets.merge_states` of the states of
        all the shares of a job (resume at any ranks and workers).

        Raises:
            ValueError: the state is not one of this dataset's, or was taken
                with other shuffle or shard_balance settings.
        """
        validate_state(state)
        taken = (state["shuffle"], state["seed"], state.get("shuffle_buffer_size"))
        ours = (self._shuffle, self._seed, self._shuffle_buffer_size)
        if taken != ours:
            raise ValueError(
                "the state was taken with shuffle={}, seed={}, shuffle_buffer_size={}; "
                "this dataset has shuffle={}, seed={}, shuffle_buffer_size={}".format(*taken, *ours)
            )
        if state.get("shard_balance", self._shard_balance) != self._shard_balance:
            raise ValueError(
                f"the state was taken with shard_balance={state['shard_balance']!r}; "
                f"this dataset has shard_balance={self._shard_balance!r}"
            )
        self._epoch = int(state["epoch"])
        self._consumed = self._resume_from = int(state["consumed"])
        shard = state.get("shard")
        self._shard = Shard(*shard) if shard is not None else None
        self._history = history_of(state)
        finished = state.get("finished")
        self._finished = dict(finished) if finished is not None else None
        self._loaded = True

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        shard = current_shard(self._parent_rank) if self._enable_sharding else None
        if self._resuming() and self._shard is not None and shard != self._shard:
            now = "everything" if shard is None else f"share {shard.index} of {shard.count}"
            raise ValueError(
                f"cannot resume: the state was taken in share {self._shard.index} of "
                f"{self._shard.count}, but this process reads {now} (a different number "
                "of ranks or DataLoader workers changes which objects each one reads: "
                "merge the states of all the shares with s3torch.datasets.merge_states "
                "to resume at another sharding)"
            )
        self._shard = shard
        self._loaded = False
        self._passes += 1
        skip, self._resume_from = self._resume_from, 0
        epoch, history = self._epoch, self._history
        self._consumed = skip
        objects = self._epoch_objects(shard, epoch)
        if skip:
            log.debug("%r: resuming epoch %d after %d objects", self, epoch, skip)
            objects = skip_first(objects, skip)
        yield from self._read_pass(objects)
        # A complete pass: the next one is a new epoch.
        self._finished = {
            "epoch": epoch,
            "consumed": self._consumed,
            "history": _history_state(history),
        }
        self._epoch = epoch + 1
        self._consumed = 0
        self._history = ()

    def _resuming(self) -> bool:
        """Whether the next pass resumes a loaded state that has read something."""
        return self._resume_from > 0

    def _read_pass(self, objects: Iterator[DatasetObject]) -> Iterator[Any]:
        """What a pass yields from ``objects``, counting ``_consumed`` (objects done) as it goes."""
        raise NotImplementedError

    def _epoch_objects(self, shard: Shard | None, epoch: int) -> Iterator[DatasetObject]:
        """This process's objects for ``epoch``, in reading order."""
        balance = self._balance(shard)
        if not self._shuffle:
            return self._share(shard, balance)
        if self._shuffle_buffer_size is not None:
            # Streaming: the listing is dealt out to the shares in a new order
            # each epoch, and each share mixed through a bounded buffer. Workers
            # read their siblings' shared listing again; a lone process may keep it.
            rng = random.Random(f"s3torch:{self._seed}:{epoch}")
            deal = Deal(shard, rng) if shard is not None else every
            listed: Callable[[Keep], Iterator[DatasetObject]]
            if self._listing_is_shared() or not self._cache_listing:
                generation = self._generation()
                listed = lambda keep: self._list(keep, generation)  # noqa: E731
            else:
                whole = self._share(None, "uneven")
                listed = lambda keep: kept(whole, keep)  # noqa: E731
            objects = self._balanced(listed, deal, shard, balance)
            stream = f":{shard.index}" if shard is not None else ""
            rng = random.Random(f"s3torch:{self._seed}:{epoch}:buffer{stream}")
            return buffer_shuffled(objects, self._shuffle_buffer_size, rng)
        everything = self._listed()
        order = list(range(len(everything)))
        random.Random(f"s3torch:{self._seed}:{epoch}").shuffle(order)
        if self._history:
            left = remaining_places(self._history)
            order = [index for place, index in enumerate(order) if left(place) is not None]
        if shard is not None:
            order = balanced_slice(order, shard.index, shard.count, balance)
        return (everything[index] for index in order)

    def _balance(self, shard: Shard | None) -> Balance:
        """How ``shard`` is made equal to the others (the default: pad with several ranks)."""
        if shard is None:
            return "uneven"
        if self._shard_balance is None:
            return "pad" if shard.ranks > 1 else "uneven"
        return self._shard_balance

    def _balanced(
        self,
        listed: Callable[[Keep], Iterator[DatasetObject]],
        own: Keep,
        shard: Shard | None,
        balance: Balance,
    ) -> Iterator[DatasetObject]:
        """``shard``'s objects of what is left of the epoch, made equal by ``balance``.

        ``listed`` lists the epoch's sequence (see :func:`._balance.balanced`);
        ``own`` keeps the shard's places in what is left of it.
        """
        positions = remaining_places(self._history) if self._history else None
        if shard is None and positions is None:
            return listed(every)
        return balanced(listed, own, shard.count if shard else 1, balance, positions)

    def _generation(self) -> str:
        """Which shared listing this pass reads: its sibling workers' of this pass.

        With ``cache_listing``, always the same one. Otherwise one per pass:
        the workers of one DataLoader pass share a base seed (their seed less
        their id) that a new pass draws afresh; persistent workers count
        their passes alike.
        """
        if self._cache_listing:
            return "0"
        worker = torch.utils.data.get_worker_info()
        base_seed = worker.seed - worker.id if worker is not None else 0
        return f"{base_seed:x}-{self._passes}"

    def _share(self, shard: Shard | None, balance: Balance) -> Iterator[DatasetObject]:
        """The listing, or this shard's share of it: cached after one, with ``cache_listing``."""
        own = round_robin(shard) if shard is not None else every
        if not self._cache_listing:
            generation = self._generation()
            return self._balanced(lambda keep: self._list(keep, generation), own, shard, balance)
        if self._listing is not None and self._listing[0] is None:
            whole = self._listing[1]
            return self._balanced(lambda keep: kept(whole, keep), own, shard, balance)
        key = (shard, balance) if shard is not None else None
        if self._listing is not None and self._listing[0] == key and not self._history:
            return iter(self._listing[1])
        return self._list_share(key, own, shard, balance)

    def _list_share(
        self, key: tuple[Shard, Balance] | None, own: Keep, shard: Shard | None, balance: Balance
    ) -> Iterator[DatasetObject]:
        share: list[DatasetObject] = []
        history = self._history
        generation = self._generation()
        for obj in self._balanced(lambda keep: self._list(keep, generation), own, shard, balance):
            share.append(obj)
            yield obj
        if not history:  # what is left of a resumed epoch is not the share of the next
            self._listing = (key, share)

    def _listed(self) -> list[DatasetObject]:
        """The whole listing (kept, with ``cache_listing``)."""
        if not self._cache_listing:
            return list(self._list(None, self._generation()))
        if self._listing is None or self._listing[0] is not None:
            self._listing = (None, list(self._list(None, self._generation())))
        return self._listing[1]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_listing"] = None  # each process lists for itself
        # DataLoader pickles the dataset for spawned workers when iteration
        # starts; they have no process group, so they take the rank from here.
        state["_parent_rank"] = distributed_rank() or self._parent_rank
        return state


def _history_state(history: tuple[Generation, ...]) -> list[list[Any]]:
    return [[shares, list(counts)] for shares, counts in history]
