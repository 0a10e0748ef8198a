"""Read aws-c-common's bookkeeping of the CRT's managed threads in this process (Linux).

aws-c-common keeps, in statics of ``_awscrt``'s shared object, the count of
managed threads not yet joined, the list of finished threads awaiting their
join, and the mutex guarding both. A forked child inherits them as they were
at the fork: these are what the fork tests check. The addresses come from the
shared object's symbol table (awscrt's wheels ship it unstripped), the values
from ``/proc/self/mem``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_SYMBOLS = ("s_unjoined_thread_count", "s_pending_join_managed_threads", "s_managed_thread_lock")
_SHT_SYMTAB = 2


@dataclass(frozen=True)
class ManagedThreads:
    """aws-c-common's managed-thread statics, as read from memory."""

    unjoined: int
    """Managed threads (and event loop threads) launched and not joined yet."""
    awaiting_join: int
    """Finished threads in the list that the next finishing thread joins."""
    lock_word: int
    """The glibc lock word of the mutex guarding both: 0 when nobody holds it."""


def _shared_object() -> tuple[Path, int]:
    """The path of the loaded ``_awscrt`` shared object and its load address."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and "_awscrt" in fields[5] and int(fields[2], 16) == 0:
            return Path(fields[5]), int(fields[0].split("-")[0], 16)
    raise RuntimeError("_awscrt is not loaded in this process")


def _symbol_offsets(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    assert data[:5] == b"\x7fELF\x02", f"{path} is not a 64-bit ELF object"
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + index * shentsize) for index in range(shnum)
    ]
    found: dict[str, int] = {}
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != _SHT_SYMTAB:
            continue
        strtab_offset = sections[link][4]
        for start in range(offset, offset + size, entsize):
            name_at, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, start)
            end = data.index(b"\0", strtab_offset + name_at)
            name = data[strtab_offset + name_at : end].decode()
            if name in _SYMBOLS:
                found[name] = value
    missing = set(_SYMBOLS) - set(found)
    assert not missing, f"{path} has no symbol table entries for {sorted(missing)}"
    return found


def managed_threads() -> ManagedThreads:
    """This process's managed-thread bookkeeping, now."""
    path, base = _shared_object()
    offsets = _symbol_offsets(path)
    with open("/proc/self/mem", "rb") as memory:
        memory.seek(base + offsets["s_unjoined_thread_count"])
        (unjoined,) = struct.unpack("<I", memory.read(4))
        head = base + offsets["s_pending_join_managed_threads"]
        memory.seek(head)
        (first,) = struct.unpack("<Q", memory.read(8))
        tail = head + 16  # struct aws_linked_list { node head; node tail; }
        awaiting, node = 0, first
        while node != tail and awaiting < 1000:
            awaiting += 1
            memory.seek(node)
            (node,) = struct.unpack("<Q", memory.read(8))
        memory.seek(base + offsets["s_managed_thread_lock"])
        (lock_word,) = struct.unpack("<i", memory.read(4))
    return ManagedThreads(unjoined, awaiting, lock_word)
