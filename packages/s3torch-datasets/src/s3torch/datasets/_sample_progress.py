"""Which samples of a pass's shards were handed out: what a tar dataset resumes from.

A pass reads its shards in order (their *places*: 0, 1, 2... in the pass's
sequence) and hands out their samples, perhaps mixed through a shuffle
buffer, so samples of a few shards may be out at once. :class:`SampleProgress`
keeps, for each shard from the oldest one not wholly handed out, the indices
of its samples handed out; that shard's place is what the pass machinery
skips to on resume (``first``), and the indices are what a resumed pass
skips inside the shards it reads again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["SampleProgress", "runs_of"]


def runs_of(indices: Iterable[int]) -> list[list[int]]:
    """``indices`` as sorted ``[start, stop)`` runs: compact for a shard read in order."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    return runs


def _indices(runs: Iterable[Iterable[int]]) -> set[int]:
    indices: set[int] = set()
    for start, stop in runs:
        indices.update(range(int(start), int(stop)))
    return indices


class SampleProgress:
    """The samples handed out of the shards from place ``first`` on (see the module doc)."""

    def __init__(
        self, first: int = 0, handed: Mapping[str, Iterable[Iterable[int]]] | None = None
    ) -> None:
        self.first = first
        self._handed: dict[int, set[int]] = {
            int(place): _indices(runs) for place, runs in (handed or {}).items()
        }
        self._totals: dict[int, int] = {}  # place -> samples in the shard, once read to its end

    def was_handed_out(self, place: int, index: int) -> bool:
        """Whether sample ``index`` of the shard at ``place`` was handed out already."""
        handed = self._handed.get(place)
        return handed is not None and index in handed

    def hand_out(self, place: int, index: int) -> None:
        """Sample ``index`` of the shard at ``place`` is handed out now."""
        self._handed.setdefault(place, set()).add(index)
        self._advance()

    def read_to_end(self, place: int, samples: int) -> None:
        """The shard at ``place`` was read to its end: it holds ``samples`` samples."""
        self._totals[place] = samples
        self._advance()

    def _advance(self) -> None:
        while (
            self.first in self._totals
            and len(self._handed.get(self.first, ())) >= self._totals[self.first]
        ):
            self._handed.pop(self.first, None)
            del self._totals[self.first]
            self.first += 1

    def state(self) -> dict[str, list[list[int]]]:
        """The samples handed out of each shard not wholly handed out (a JSON-able mapping)."""
        return {
            str(place): runs_of(handed)
            for place, handed in sorted(self._handed.items())
            if place >= self.first and handed
        }
