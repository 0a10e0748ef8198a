"""One prefix listing per dataset, shared by all its DataLoader workers through a file.

Without it, every worker would list the whole prefix for itself: N workers,
N listings per epoch. Instead, the first worker that needs the listing writes
it to a file named after the dataset, from a background thread, a page at a
time, and every worker (that one included) reads the file as it grows. The
writer lists at the server's pace, whatever its own worker is doing, so no
worker ever waits on another one's consumer.

The writer holds an exclusive ``flock`` on the file until it has written the
end record. A reader that reaches the end of the file without that record
can so tell a writer still at work (locked) from one that is gone (unlocked:
it died or its listing failed); it then lists for itself, which also raises
the listing's own error (a missing bucket, say) where it happened.

Workers of later epochs (without ``persistent_workers``) read the finished
file: one listing per dataset, not per epoch; a file left unfinished (its
writer's worker stopped early) is replaced by the next worker that needs it.
The file is removed when the dataset is garbage-collected in the process that
made it; files of processes that died without that are removed when a later
dataset is made.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from s3torch.client import ObjectInfo

from ._source import DatasetObject

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: each worker lists for itself
    fcntl = None  # type: ignore[assignment]

__all__ = ["SharedListing"]

log = logging.getLogger(__name__)

_POLL_FIRST_S = 0.001
_POLL_MAX_S = 0.02
_PREFIX = "s3torch-listing-"


class _UnusableFileError(Exception):
    """The file ended without its end record and nobody writes it, or holds a bad line."""


class SharedListing:
    """A file that holds one listing of a dataset, written once, read by every worker."""

    def __init__(self, path: Path, bucket: str) -> None:
        self.path = path
        self.bucket = bucket

    @classmethod
    def for_dataset(cls, dataset: object, bucket: str) -> SharedListing:
        """A new file name for ``dataset``, removed when it is collected in this process."""
        directory, owner = Path(tempfile.gettempdir()), os.getpid()
        _remove_orphans(directory)
        listing = cls(directory / f"{_PREFIX}{owner}-{uuid.uuid4().hex}.jsonl", bucket)
        weakref.finalize(dataset, _remove_if_owner, listing.path, owner)
        return listing

    @staticmethod
    def available() -> bool:
        """Whether sharing works here (it needs POSIX ``flock``)."""
        return fcntl is not None

    def objects(
        self, list_pages: Callable[[], Iterator[list[DatasetObject]]]
    ) -> Iterator[DatasetObject]:
        """Every object of the listing, in order; ``list_pages`` lists, if nobody has yet."""
        bucket = self.bucket
        try:
            writer = self._claim()
        except OSError as error:  # no room or no right to write: list alone
            self._warn_unshared(error)
            yield from (obj for page in list_pages() for obj in page)
            return
        if writer is not None:
            thread = threading.Thread(
                target=self._write_pages,
                args=(writer, list_pages),
                name="s3torch-shared-listing",
                daemon=True,
            )
            try:
                thread.start()
            except BaseException:
                writer.close()  # never leave the file locked with nobody writing it
                raise
        last_key: str | None = None
        try:
            with open(self.path, "rb") as file:
                for obj in _follow(file, bucket):
                    last_key = obj.key
                    yield obj
            return
        except (_UnusableFileError, OSError) as why:
            log.warning(
                "the shared listing %s is unusable (%r): listing s3://%s for this process",
                self.path,
                why,
                bucket,
            )
        # List for ourselves, past what the file gave us: a listing is in key
        # order, so an object added or removed meanwhile is neither repeated nor lost.
        for page in list_pages():
            for obj in page:
                if last_key is None or obj.key > last_key:
                    yield obj

    def publish(self, objects: Iterable[DatasetObject]) -> None:
        """Write a listing already made (unless a file exists): workers then read, not list."""
        try:
            writer = self._claim()
        except OSError as error:  # the workers will list for themselves
            self._warn_unshared(error)
            return
        if writer is not None:
            self._write_pages(writer, lambda: iter([list(objects)]))

    def _warn_unshared(self, error: OSError) -> None:
        log.warning(
            "cannot share the listing of s3://%s through %s: %s", self.bucket, self.path, error
        )

    # ----------------------------------------------------------------- writing
    def _claim(self) -> IO[bytes] | None:
        """The file, new, created and locked by us; None if a usable one exists.

        It is locked before it appears under its name (a hard link to, or a
        rename of, a locked temporary file), so a reader never sees it
        unlocked and unfinished while its writer is alive. An abandoned file
        (unlocked, no end record) is replaced.
        """
        abandoned = self._abandoned()
        if abandoned is False:
            return None
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        file = open(temporary, "wb")  # noqa: SIM115 - handed to the writer
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            if abandoned:
                log.debug("replacing the unfinished shared listing %s", self.path)
                os.replace(temporary, self.path)
            else:
                os.link(temporary, self.path)
        except FileExistsError:
            file.close()
            return None
        except BaseException:
            file.close()
            raise
        finally:
            temporary.unlink(missing_ok=True)
        return file

    def _abandoned(self) -> bool | None:
        """None: no file yet; True: unfinished and nobody writes it; False: usable."""
        try:
            with open(self.path, "rb") as file:
                if not _unlocked(file):
                    return False  # being written
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - 256))
                tail = file.read()
                last_line = tail.rstrip(b"\n").rpartition(b"\n")[2]
                # Objects are lists, the end record a dict: a whole one ends the file.
                return not (tail.endswith(b"}\n") and last_line.startswith(b"{"))
        except FileNotFoundError:
            return None

    def _write_pages(
        self, file: IO[bytes], list_pages: Callable[[], Iterator[list[DatasetObject]]]
    ) -> None:
        """Write every page, then the end record; stop without one if the listing fails."""
        count = 0
        try:
            with file:
                for page in list_pages():
                    file.write(b"".join(_encode(obj) for obj in page))
                    file.flush()
                    count += len(page)
                file.write(json.dumps({"objects": count}).encode() + b"\n")
                file.flush()
            log.debug("shared listing %s: %d objects", self.path, count)
        except Exception as error:  # the readers list for themselves, and meet it there
            log.debug("shared listing %s stopped after %d objects: %r", self.path, count, error)


def _encode(obj: DatasetObject) -> bytes:
    info = obj.info
    assert info is not None, "a prefix listing always has the object's size"
    modified = info.last_modified.isoformat() if info.last_modified is not None else None
    record = [info.key, info.size, info.etag, modified, info.storage_class]
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _decode(bucket: str, line: bytes) -> DatasetObject | int:
    """The object of a line, or the object count of the end record."""
    record: Any = json.loads(line)
    if isinstance(record, dict):
        return int(record["objects"])
    key, size, etag, modified, storage_class = record
    last_modified = datetime.fromisoformat(modified) if modified is not None else None
    return DatasetObject(
        bucket, key, ObjectInfo(bucket, key, size, etag, last_modified, storage_class)
    )


def _follow(file: IO[bytes], bucket: str) -> Iterator[DatasetObject]:
    """The objects of ``file``, waiting for its writer until the end record."""
    pending = b""
    delivered = 0
    pause = _POLL_FIRST_S
    while True:
        chunk = file.read(1 << 20)
        if not chunk:
            if _unlocked(file):  # nobody writes: one last read, then it is final
                chunk = file.read(1 << 20)
                if not chunk:
                    raise _UnusableFileError(f"{delivered} objects and no end record")
            else:
                time.sleep(pause)
                pause = min(pause * 2, _POLL_MAX_S)
                continue
        pause = _POLL_FIRST_S
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            try:
                item = _decode(bucket, line)
            except (ValueError, KeyError, TypeError) as bad:
                raise _UnusableFileError(f"line {delivered + 1}: {bad!r}") from bad
            if isinstance(item, int):
                if item != delivered:
                    raise _UnusableFileError(f"{delivered} objects, but the end record says {item}")
                return
            delivered += 1
            yield item


def _unlocked(file: IO[bytes]) -> bool:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    return True


@functools.cache
def _remove_orphans(directory: Path) -> None:
    """Remove the listing files of processes that no longer exist (killed, say).

    Once per directory and process: the scan is not repeated for every dataset.
    """
    for path in directory.glob(f"{_PREFIX}*-*.jsonl"):
        owner = path.name[len(_PREFIX) :].partition("-")[0]
        if owner.isdigit() and not _alive(int(owner)):
            log.debug("removing %s, left by process %s", path, owner)
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _remove_if_owner(path: Path, owner: int) -> None:
    # Forked workers inherit this finalizer: only the dataset's own process removes.
    if os.getpid() == owner:
        path.unlink(missing_ok=True)
