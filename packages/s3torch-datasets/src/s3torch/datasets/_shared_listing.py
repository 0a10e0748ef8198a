"""One prefix listing per dataset and pass, shared by all its DataLoader workers through a file.

Without it, every worker would list the whole prefix for itself: N workers,
N listings (and N times the XML parsing) per epoch. Instead, the first worker
that needs the listing writes it to a file named after the dataset and the
pass, from a background thread, a page at a time, and every worker (that one
included) reads the file as it grows, decoding only the objects it keeps.
The writer lists at the server's pace, whatever its own worker is doing, so
no worker ever waits on another one's consumer.

The file is compact: one text record per object, zlib-compressed and flushed
after each page (about 30 bytes an object for typical keys; see
docs/datasets.md for measurements at 10 million keys). Reading and writing
hold one page and one chunk of the file in memory, whatever its length.

The writer holds an exclusive ``flock`` on the file until it has written the
end record. A reader that reaches the end of the file without that record
can so tell a writer still at work (locked) from one that is gone (unlocked:
it died or its listing failed); it then lists for itself, which also raises
the listing's own error (a missing bucket, say) where it happened.

Lifetime: the files of a dataset are removed when it is garbage-collected in
the process that made it. Files of processes that died without that are
removed when a later dataset is made, but only files of this machine's boot
and this PID namespace (their names say so), whose owner PID is gone and
that nobody holds locked: another container sharing the directory never
loses a file it uses. A file removed while a worker reads it stays readable
to that worker (POSIX unlink semantics).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from s3torch.client import ObjectInfo

from ._source import DatasetObject

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: each worker lists for itself
    fcntl = None  # type: ignore[assignment]

__all__ = ["LISTING_DIR_ENV", "Keep", "SharedListing", "encode_listing", "kept"]

log = logging.getLogger(__name__)

LISTING_DIR_ENV = "S3TORCH_LISTING_DIR"
"""Environment variable: the directory of shared listing files (default: the temp dir)."""

Keep = Callable[[int], bool]
"""Whether a reader keeps the object at a position: called once per position, in order."""

_POLL_FIRST_S = 0.001
_POLL_MAX_S = 0.02
_CHUNK = 1 << 18
_PREFIX = "s3torch-listing2-"
_SUFFIX = ".z"
_END = b"\x00end\t"  # the end record: a line no object's record can be
_TRAILER = b"\x00s3torch-listing-complete\n"  # after the compressed stream


class _UnusableFileError(Exception):
    """The file ended without its end record and nobody writes it, or holds a bad record."""


class _CorruptFileError(RuntimeError):
    """The file holds a record that was never written whole: it cannot say where it stopped."""


class SharedListing:
    """The files that hold the listings of one dataset: one per generation (pass).

    A generation names one listing: the workers of one DataLoader pass ask for
    the same one and share it; a later pass asks for a new one to see objects
    added meanwhile, or for the same one to reuse it.
    """

    def __init__(self, directory: Path, name: str, bucket: str) -> None:
        self.directory = directory
        self.name = name
        self.bucket = bucket

    @classmethod
    def for_dataset(cls, dataset: object, bucket: str) -> SharedListing:
        """New file names for ``dataset``, whose files go when it is collected in this process.

        The directory is ``$S3TORCH_LISTING_DIR`` if set, else the temporary one.
        """
        directory = Path(os.environ.get(LISTING_DIR_ENV) or tempfile.gettempdir())
        owner = os.getpid()
        _remove_orphans(directory)
        listing = cls(directory, f"{_PREFIX}{_namespace()}-{owner}-{uuid.uuid4().hex}", bucket)
        weakref.finalize(dataset, _remove_all, directory, listing.name, owner)
        return listing

    @staticmethod
    def available() -> bool:
        """Whether sharing works here (it needs POSIX ``flock``)."""
        return fcntl is not None

    def path(self, generation: str) -> Path:
        """The file of listing ``generation``."""
        return self.directory / f"{self.name}-{generation}{_SUFFIX}"

    def objects(
        self,
        list_pages: Callable[[], Iterator[list[DatasetObject]]],
        generation: str = "0",
        keep: Keep | None = None,
    ) -> Iterator[DatasetObject]:
        """The objects of listing ``generation`` that ``keep`` keeps, in key order.

        ``list_pages`` lists, if no worker has yet: into the file, for everyone.
        """
        path = self.path(generation)
        try:
            writer = self._claim(path)
        except OSError as error:  # no room or no right to write: list alone
            self._warn_unshared(path, error)
            yield from kept((obj for page in list_pages() for obj in page), keep)
            return
        if writer is not None:
            thread = threading.Thread(
                target=_write_pages,
                args=(writer, path, list_pages),
                name="s3torch-shared-listing",
                daemon=True,
            )
            try:
                thread.start()
            except BaseException:
                writer.close()  # never leave the file locked with nobody writing it
                raise
        follower = _Follower(self.bucket, keep)
        try:
            with open(path, "rb") as file:
                yield from follower.follow(file)
            return
        except (_UnusableFileError, OSError) as why:
            log.warning(
                "the shared listing %s is unusable (%r): listing s3://%s for this process",
                path,
                why,
                self.bucket,
            )
        # List for ourselves, past what the file gave us: a listing is in key
        # order, so an object added or removed meanwhile is neither repeated nor lost.
        last_key, position = follower.last_key(), follower.position
        for page in list_pages():
            for obj in page:
                if last_key is None or obj.key > last_key:
                    if keep is None or keep(position):
                        yield obj
                    position += 1

    def put(self, generation: str, data: bytes | bytearray | memoryview) -> bool:
        """Make ``data`` (a whole file of :func:`encode_listing`) listing ``generation``.

        Written under a temporary name and renamed, so a reader sees either
        no file or the complete one; a file of that generation is replaced.
        Whether it was written (a warning says why not).
        """
        path = self.path(generation)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(temporary, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            self._warn_unshared(path, error)
            return False
        return True

    def _warn_unshared(self, path: Path, error: OSError) -> None:
        log.warning("cannot share the listing of s3://%s through %s: %s", self.bucket, path, error)

    # ----------------------------------------------------------------- writing
    def _claim(self, path: Path) -> IO[bytes] | None:
        """The file, new, created and locked by us; None if a usable one exists.

        It is locked before it appears under its name (a hard link to, or a
        rename of, a locked temporary file), so a reader never sees it
        unlocked and unfinished while its writer is alive. An abandoned file
        (unlocked, no end record) is replaced. The files of other generations
        of this dataset that nobody writes are removed.
        """
        abandoned = _abandoned(path)
        if abandoned is False:
            return None
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        file = open(temporary, "wb")  # noqa: SIM115 - handed to the writer
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            if abandoned:
                log.debug("replacing the unfinished shared listing %s", path)
                os.replace(temporary, path)
            else:
                os.link(temporary, path)
        except FileExistsError:
            file.close()
            return None
        except BaseException:
            file.close()
            raise
        finally:
            temporary.unlink(missing_ok=True)
        for older in self.directory.glob(f"{self.name}-*{_SUFFIX}"):
            if older != path:
                _remove_if_unlocked(older)
        return file


def kept(objects: Iterable[DatasetObject], keep: Keep | None) -> Iterator[DatasetObject]:
    """The ``objects`` that ``keep`` keeps, by position (all of them if ``keep`` is None)."""
    if keep is None:
        return iter(objects)
    return (obj for position, obj in enumerate(objects) if keep(position))


# ------------------------------------------------------------------- format
def _encode(obj: DatasetObject) -> bytes:
    """``key TAB size TAB etag TAB last-modified TAB storage-class`` and a newline.

    A key that is not plain printable text (a tab, a newline, a control
    character), or that starts with a quote, is written as a JSON string.
    """
    info = obj.info
    assert info is not None, "a prefix listing always has the object's size"
    key = info.key
    if key[:1] == '"' or not key.isprintable():
        key = json.dumps(key)
    modified = info.last_modified.isoformat() if info.last_modified is not None else ""
    return (
        f"{key}\t{info.size}\t{info.etag or ''}\t{modified}\t{info.storage_class or ''}\n"
    ).encode()


def _decode_key(field: bytes) -> str:
    text = field.decode()
    return json.loads(text) if text[:1] == '"' else text


def _decode(bucket: str, line: bytes) -> DatasetObject:
    key_field, size, etag, modified, storage_class = line.split(b"\t")
    key = _decode_key(key_field)
    info = ObjectInfo(
        bucket,
        key,
        int(size),
        etag.decode() or None,
        datetime.fromisoformat(modified.decode()) if modified else None,
        storage_class.decode() or None,
    )
    return DatasetObject(bucket, key, info)


def encode_listing(pages: Iterable[list[DatasetObject]]) -> Iterator[bytes]:
    """The bytes of a listing file of ``pages``: one piece per page, then the end.

    Each piece can be written (and read back) as soon as it is made; the
    last one holds the end record and the trailer that mark the file complete.
    """
    count = 0
    packer = zlib.compressobj(1)
    for page in pages:
        records = b"".join(_encode(obj) for obj in page)
        yield packer.compress(records) + packer.flush(zlib.Z_SYNC_FLUSH)
        count += len(page)
    end = _END + str(count).encode() + b"\n"
    yield packer.compress(end) + packer.flush(zlib.Z_FINISH) + _TRAILER


def _write_pages(
    file: IO[bytes], path: Path, list_pages: Callable[[], Iterator[list[DatasetObject]]]
) -> None:
    """Write every page, then the end record; stop without one if the listing fails."""
    pieces = 0
    try:
        with file:
            for piece in encode_listing(list_pages()):
                file.write(piece)
                file.flush()
                pieces += 1
        log.debug("shared listing %s: %d pages", path, pieces - 1)
    except Exception as error:  # the readers list for themselves, and meet it there
        log.debug("shared listing %s stopped after %d pages: %r", path, pieces, error)


# ------------------------------------------------------------------ reading
class _Follower:
    """Reads a listing file as it grows; remembers how far it got, to resume from there."""

    def __init__(self, bucket: str, keep: Keep | None) -> None:
        self.bucket = bucket
        self.keep = keep
        self.position = 0  # objects read from the file, kept or not
        self.last_line = b""  # the last object's record
        self.ended = False

    def follow(self, file: IO[bytes]) -> Iterator[DatasetObject]:
        """The objects kept, waiting for the writer until the end record."""
        unpacker = zlib.decompressobj()
        pending = b""
        pause = _POLL_FIRST_S
        while True:
            chunk = file.read(_CHUNK)
            if not chunk:
                if _unlocked(file):  # nobody writes: one last read, then it is final
                    chunk = file.read(_CHUNK)
                    if not chunk:
                        raise _UnusableFileError(f"{self.position} objects and no end record")
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, _POLL_MAX_S)
                    continue
            pause = _POLL_FIRST_S
            while True:  # a bounded piece of text at a time, whatever the ratio
                try:
                    text = unpacker.decompress(chunk, _CHUNK)
                except zlib.error as bad:
                    raise _UnusableFileError(f"after {self.position} objects: {bad}") from bad
                chunk = unpacker.unconsumed_tail
                *lines, pending = (pending + text).split(b"\n")
                yield from self._records(lines)
                if self.ended:
                    return
                if not chunk and len(text) < _CHUNK:
                    break  # all this input is out

    def last_key(self) -> str | None:
        """The key of the last object read from the file (kept or not), if any."""
        if not self.last_line:
            return None
        try:  # decoded only now: most records are never decoded
            return _decode_key(self.last_line.partition(b"\t")[0])
        except ValueError as bad:
            raise _CorruptFileError(f"record {self.position}: {bad!r}") from bad

    def _records(self, lines: list[bytes]) -> Iterator[DatasetObject]:
        for line in lines:
            if line.startswith(_END):
                if line[len(_END) :] != str(self.position).encode():
                    raise _UnusableFileError(
                        f"{self.position} objects, but the end record says {line!r}"
                    )
                self.ended = True
                return
            if self.keep is None or self.keep(self.position):
                try:
                    obj = _decode(self.bucket, line)
                except (ValueError, TypeError) as bad:
                    raise _UnusableFileError(f"record {self.position + 1}: {bad!r}") from bad
                self.last_line = line
                self.position += 1
                yield obj
            else:
                self.last_line = line
                self.position += 1


def _abandoned(path: Path) -> bool | None:
    """None: no file yet; True: unfinished and nobody writes it; False: usable."""
    try:
        with open(path, "rb") as file:
            if not _unlocked(file):
                return False  # being written
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - len(_TRAILER)))
            return file.read() != _TRAILER
    except FileNotFoundError:
        return None


def _unlocked(file: IO[bytes]) -> bool:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    return True


# ----------------------------------------------------------------- lifetime
@functools.cache
def _namespace() -> str:
    """This machine's boot and PID namespace, short: where a PID means one process.

    Another container sharing the directory has another PID namespace (and
    perhaps another boot): its PIDs say nothing about our processes, nor ours
    about its, so only files with our tag are ever judged by PID.
    """
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(
                Path(source).read_text().strip()
                if source.endswith("id")
                else str(os.stat(source).st_ino)
            )
        except OSError:
            parts.append("?")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@functools.cache
def _remove_orphans(directory: Path) -> None:
    """Remove the listing files of dead processes of this namespace (killed, say).

    Once per directory and process: the scan is not repeated for every dataset.
    """
    for path in directory.glob(f"{_PREFIX}{_namespace()}-*{_SUFFIX}"):
        owner = path.name[len(_PREFIX) :].split("-")[1]
        if owner.isdigit() and not _alive(int(owner)) and _remove_if_unlocked(path):
            log.debug("removed %s, left by process %s", path, owner)


def _remove_if_unlocked(path: Path) -> bool:
    """Remove ``path`` unless a writer holds it; whether it was removed."""
    try:
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            return True
    except OSError:  # locked (being written), gone already, or not ours to remove
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _remove_all(directory: Path, name: str, owner: int) -> None:
    # Forked workers inherit this finalizer: only the dataset's own process removes.
    if os.getpid() == owner:
        for path in directory.glob(f"{name}-*{_SUFFIX}"):
            path.unlink(missing_ok=True)
