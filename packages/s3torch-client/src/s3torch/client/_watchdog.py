"""Time limits on requests: one watchdog thread per process, one watch per client.

Every request of a client goes through :meth:`CrtClient.make_request
<._transport.CrtClient.make_request>`, which wraps it in a :class:`Tracked`
registered with the client's :class:`ClientWatch`. A daemon thread wakes every
:data:`TICKS_PER_LIMIT` times per shortest limit of the clients with requests
in flight (every 1.25 s with the defaults; never while nothing is in flight),
and cancels the requests that hit a limit of the client's configuration:

``stall_timeout`` (no progress). awscrt hands a response over whole (one part,
up to ``part_size`` bytes), so progress is seen per response, never per byte.
A request is allowed ``stall_timeout`` seconds per :data:`STALL_UNIT` bytes it
has to move (at least one period: 10 s per 4 MiB by default, a floor of
0.4 MB/s for a request alone), and it is stalled when, for that long, it
showed no progress itself (no headers, no body) and either

* nothing at all arrived on its client for that long, nor for as long as the
  bytes on the wire (the oldest ``connections`` requests in flight, which
  share the link and finish together on a slow one) take at the rate the
  client has been receiving, twice over (before any rate is known: at the
  floor rate): the server or the link stopped; or
* requests sent after it finished more than :data:`OVERTAKE_ROUNDS` rounds of
  the connection pool's worth of bytes (``2 x connections x max(size,
  part_size)``): the CRT serves its queue in order, so a request that later
  ones keep overtaking is not queued but stuck (a server trickling 100 B/s).

A request merely waiting in the CRT's queue (which holds requests beyond its
connection pool) behind others that are progressing is therefore never cut
off: the client's progress keeps it alive, and nothing sent after it finishes
first. A stalled request is cancelled and sent once more on a fresh
connection (unless it was answered in part, the client has ``max_attempts=1``,
or it is a CompleteMultipartUpload, which may have been applied); if that
stalls too, it fails with :class:`~s3torch.client.S3TimeoutError`.

``request_timeout`` (in all): a request that started longer ago than that,
queueing, retries and re-sends included, is cancelled and fails at once.

A timed-out request is cancelled through the CRT, whose ``on_done`` then runs
as for any failure: whoever waits on the request wakes with the
:class:`~s3torch.client.S3TimeoutError` (the CRT's cancel error chained to
it), and nothing of it is left in flight. A forked child starts with no
watchdog and no watches; its first request starts its own thread.

Lock order: a watch's ``lock`` guards its requests' bookkeeping and is a leaf:
nothing is called under it, and requests are cancelled (and re-sent) outside
it. It is re-entrant only for a finalizer that garbage collection runs under
it (a dropped writer aborting its upload starts a request). The module lock
``_cond`` guards only the thread's idle flag and the set of watches; it is
never held with a watch's lock.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from awscrt.exceptions import AwsCrtError
from awscrt.s3 import S3Request

from ._crt_errors import chain
from .config import S3ClientConfig
from .errors import S3TimeoutError

__all__ = ["STALL_UNIT", "ClientWatch", "Tracked"]

log = logging.getLogger(__name__)

STALL_UNIT = 4 * 1024 * 1024
"""``stall_timeout`` is granted once per this many bytes a request has to move."""
OVERTAKE_ROUNDS = 2
"""How many connection pools' worth of later requests may overtake a silent one."""
TICKS_PER_LIMIT = 8
"""Checks per shortest limit: a limit is noticed at most an eighth of it late."""
MIN_TICK, MAX_TICK = 0.05, 2.0
"""Bounds on the seconds between two checks (each wakes a Python thread)."""
RESENDS = 1
"""How many times a stalled request is sent again before it fails."""
DRAIN_SLACK = 2.0
"""How many times the bytes on the wire may take, at the observed rate, before a stall."""
RATE_MEMORY = 30.0
"""Seconds over which the observed rate forgets (exponentially) what it saw."""
_MIN_RATE_BYTES = 1024 * 1024  # below this, too little was seen to tell a rate
# Never sent again after a stall: the first attempt may have been applied.
_NOT_RESENT = frozenset({"CompleteMultipartUpload"})

_PASS, _RESEND, _EXPIRED = range(3)

Callback = Callable[..., Any]


class Tracked:
    """One request, across its attempts on the CRT: what the watchdog knows of it.

    Made and started by :meth:`CrtClient.make_request`; callers keep it to
    :meth:`cancel` it. Its ``on_headers``/``on_body``/``on_done`` are what the
    CRT calls; they note progress and call the caller's callbacks, with the
    :class:`S3TimeoutError` as ``error`` when a limit ended the request.
    """

    __slots__ = (
        "_launch_attempt",
        "_on_body",
        "_on_done",
        "_on_headers",
        "ahead",
        "answered",
        "attempt_started",
        "attempts",
        "bucket",
        "cancelled",
        "done",
        "expired",
        "key",
        "last_seen",
        "mark",
        "operation",
        "request",
        "resendable",
        "sequence",
        "size",
        "started",
        "watch",
        "why",
    )

    def __init__(
        self,
        watch: ClientWatch,
        *,
        operation: str,
        bucket: str | None,
        key: str | None,
        size: int,
        launch: Callable[[Tracked], S3Request],
        on_headers: Callback | None = None,
        on_body: Callback | None = None,
        on_done: Callback | None = None,
    ) -> None:
        self.watch = watch
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.size = size
        self.resendable = operation not in _NOT_RESENT and watch.may_resend
        self._launch_attempt = launch
        self._on_headers = on_headers
        self._on_body = on_body
        self._on_done = on_done
        self.request: S3Request | None = None
        self.sequence = 0
        self.started = 0.0
        self.attempt_started = 0.0
        self.last_seen = 0.0
        self.mark = 0  # the client's finished bytes when this attempt started
        self.ahead = 0  # the bytes of requests in flight when it started
        self.attempts = 0
        self.answered = False  # a callback of the current attempt ran
        self.cancelled = False  # by its owner
        self.expired: str | None = None  # the limit that ended the current attempt
        self.why = ""
        self.done = False

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Send the first attempt (raises what the CRT raises if it refuses)."""
        self.watch.register(self)
        error = self._launch()
        if error is not None:
            raise error

    def _launch(self) -> BaseException | None:
        """Start one attempt; return the error if the CRT refused (then it is over)."""
        try:
            request = self._launch_attempt(self)
        except BaseException as error:
            self.watch.unregister(self)
            return error
        with self.watch.lock:
            if self.done:  # it finished already: on_done let go of it
                return None
            self.request = request
            cancel = self.cancelled or self.expired is not None
        if cancel:
            request.cancel()
        return None

    def cancel(self) -> None:
        """Cancel the request: its ``on_done`` then runs with the CRT's cancel error."""
        with self.watch.lock:
            self.cancelled = True
            request = self.request
        if request is not None:
            request.cancel()

    # -------------------------------------------------------------- callbacks
    def on_headers(self, status_code: int, headers: Any, **_: Any) -> None:
        self.watch.progress(self)
        if self._on_headers is not None:
            self._on_headers(status_code=status_code, headers=headers)

    def on_body(self, chunk: bytes, offset: int, **_: Any) -> None:
        self.watch.progress(self)
        if self._on_body is not None:
            self._on_body(chunk=chunk, offset=offset)

    def on_done(self, error: BaseException | None = None, **kwargs: Any) -> None:
        action = self.watch.finish(self, error)
        if action == _RESEND:
            log.warning(
                "%s %s made no progress (%s): sent again on a fresh connection",
                self.operation,
                _where(self.bucket, self.key),
                self.why,
            )
            refused = self._launch()
            if refused is None:
                return
            error = refused
        elif action == _EXPIRED:
            error = self.watch.timeout_error(self, error)
        if self._on_done is not None:
            self._on_done(error=error, **kwargs)


class ClientWatch:
    """The requests in flight on one client, and the limits they are held to."""

    def __init__(self, config: S3ClientConfig) -> None:
        self.stall_timeout = config.stall_timeout
        self.request_timeout = config.request_timeout
        self.may_resend = config.max_attempts > 1
        self.connections = config.max_connections
        self.overtake_unit = OVERTAKE_ROUNDS * config.max_connections
        self.part_size = config.part_size
        limits = [limit for limit in (self.stall_timeout, self.request_timeout) if limit]
        self.tick = min([MAX_TICK, *(limit / TICKS_PER_LIMIT for limit in limits)])
        self.tick = max(MIN_TICK, self.tick)
        # Re-entrant: a request started from a finalizer that runs (garbage
        # collection) while this thread holds it must not deadlock.
        self.lock = threading.RLock()
        self.inflight: dict[int, Tracked] = {}
        self.inflight_bytes = 0
        self.finished_bytes = 0
        self.last_progress = time.monotonic()
        # The rate the client receives at: bytes finished over time spent with
        # requests in flight, both fading over RATE_MEMORY seconds; read as
        # ``rate`` (None until enough was seen), updated only when a request
        # finishes, so a stall does not lower it.
        self.rate: float | None = None
        self._seen_bytes = 0.0
        self._busy = 0.0
        self._clock = self.last_progress
        self._sequence = 0
        self.watched = False  # known to this process's watchdog thread

    @property
    def enabled(self) -> bool:
        return self.stall_timeout is not None or self.request_timeout is not None

    def in_flight(self) -> int:
        """How many requests are in flight (for tests: 0 once everything has ended)."""
        with self.lock:
            return len(self.inflight)

    # ---------------------------------------------------------- bookkeeping
    def register(self, tracked: Tracked) -> None:
        now = time.monotonic()
        with self.lock:
            self._advance(now)
            tracked.started = now
            self._enter(tracked, now)
        if self.enabled:
            _watchdog_for(self)

    def _enter(self, tracked: Tracked, now: float) -> None:
        """A new attempt of ``tracked`` starts now. Call with the lock held."""
        self._sequence += 1
        tracked.sequence = self._sequence
        tracked.attempts += 1
        tracked.attempt_started = tracked.last_seen = now
        tracked.answered = False
        tracked.mark = self.finished_bytes
        tracked.ahead = self.inflight_bytes
        self.inflight_bytes += tracked.size
        self.inflight[tracked.sequence] = tracked

    def _advance(self, now: float) -> None:
        """Age the rate's counts to ``now``. Call with the lock held, before a change."""
        elapsed = now - self._clock
        if elapsed <= 0:
            return
        fade = math.exp(-elapsed / RATE_MEMORY)
        self._seen_bytes *= fade
        self._busy *= fade
        if self.inflight:
            self._busy += elapsed
        self._clock = now

    def _leave(self, tracked: Tracked) -> None:
        if self.inflight.pop(tracked.sequence, None) is not None:
            self.inflight_bytes -= tracked.size
        tracked.request = None  # the native request holds our callbacks: break the cycle

    def unregister(self, tracked: Tracked) -> None:
        """``tracked`` never got going (the CRT refused it)."""
        with self.lock:
            self._leave(tracked)
            tracked.done = True

    def progress(self, tracked: Tracked) -> None:
        """A response (or part of one) of ``tracked`` arrived."""
        now = time.monotonic()
        tracked.last_seen = now
        tracked.answered = True
        self.last_progress = now

    def finish(self, tracked: Tracked, error: BaseException | None) -> int:
        """An attempt of ``tracked`` ended: pass it on, send it again, or fail it."""
        now = time.monotonic()
        with self.lock:
            self._advance(now)
            self._leave(tracked)
            ours = (
                tracked.expired is not None
                and not tracked.cancelled
                and error is not None
                and _is_cancel(error)
            )
            if not ours:
                tracked.done = True
                if error is None or not _is_cancel(error):
                    self.last_progress = now  # an answer, or a failure: the server is there
                if error is None:
                    self.finished_bytes += tracked.size
                    self._seen_bytes += tracked.size
                    if self._seen_bytes >= _MIN_RATE_BYTES and self._busy > 0:
                        self.rate = self._seen_bytes / self._busy
                return _PASS
            if (
                tracked.expired == "stall_timeout"
                and tracked.resendable
                and tracked.attempts <= RESENDS
                and not tracked.answered
            ):
                tracked.expired = None
                self._enter(tracked, now)
                return _RESEND
            tracked.done = True
            return _EXPIRED

    def timeout_error(self, tracked: Tracked, error: BaseException | None) -> S3TimeoutError:
        limit = tracked.expired or "stall_timeout"
        attempts = tracked.attempts
        failure = S3TimeoutError(
            f"{tracked.why}; cancelled after {attempts} attempt{'s' if attempts > 1 else ''}. "
            f"If the link is this slow, raise S3ClientConfig.{limit} (or set it to None)",
            operation=tracked.operation,
            bucket=tracked.bucket,
            key=tracked.key,
            code=limit,
        )
        if error is not None:
            chain(failure, error)
        return failure

    # ---------------------------------------------------------------- limits
    def expired(self, now: float) -> tuple[list[Tracked], bool]:
        """The requests that just hit a limit (marked so), and whether any is in flight."""
        found: list[Tracked] = []
        with self.lock:
            if not self.inflight:
                return found, False
            stall, total = self.stall_timeout, self.request_timeout
            drain = 0.0
            if stall is not None:  # how long the bytes on the wire may take
                oldest = itertools.islice(self.inflight.values(), self.connections)
                wire = sum(t.size for t in oldest)
                if self.rate is not None:
                    drain = DRAIN_SLACK * wire / self.rate
                else:
                    drain = stall * wire / STALL_UNIT
            for tracked in list(self.inflight.values()):
                if tracked.expired is not None or tracked.cancelled:
                    continue
                if total is not None and now - tracked.started > total:
                    tracked.why = f"it took more than request_timeout={total:g} s in all"
                    tracked.expired = "request_timeout"
                    found.append(tracked)
                    continue
                if stall is None:
                    continue
                allowance = stall * max(1.0, tracked.size / STALL_UNIT)
                silent = now - tracked.last_seen
                if silent <= allowance:
                    continue
                quiet = now - max(tracked.last_seen, self.last_progress)
                overtaken = self.finished_bytes - tracked.mark - tracked.ahead
                limit = self.overtake_unit * max(tracked.size, self.part_size)
                if quiet > max(allowance, drain):
                    tracked.why = (
                        f"nothing arrived on this client for {quiet:.1f} s "
                        f"(stall_timeout={stall:g} s{_per_size(tracked.size, allowance)}"
                        f"{_drain(drain, allowance)})"
                    )
                elif overtaken > limit:
                    tracked.why = (
                        f"nothing of it arrived for {silent:.1f} s while requests sent after "
                        f"it moved {overtaken / 2**20:.0f} MiB (stall_timeout={stall:g} s"
                        f"{_per_size(tracked.size, allowance)})"
                    )
                else:
                    continue
                tracked.expired = "stall_timeout"
                found.append(tracked)
            return found, True


def _per_size(size: int, allowance: float) -> str:
    if size <= STALL_UNIT:
        return ""
    return f" per 4 MiB: {allowance:.1f} s for its {size} bytes"


def _drain(drain: float, allowance: float) -> str:
    if drain <= allowance:
        return ""
    return f"; {drain:.1f} s for the bytes on the wire at the rate seen"


def _is_cancel(error: BaseException) -> bool:
    return isinstance(error, AwsCrtError) and error.name == "AWS_ERROR_S3_CANCELED"


def _where(bucket: str | None, key: str | None) -> str:
    if not bucket:
        return "(no bucket)"
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


# ------------------------------------------------------------------ the thread
_cond = threading.Condition()
_watches: weakref.WeakSet[ClientWatch] = weakref.WeakSet()
_idle = True  # the thread sleeps until a request registers (or has not started)
_thread: threading.Thread | None = None


def _watchdog_for(watch: ClientWatch) -> None:
    """Make sure this process's watchdog runs and watches ``watch``.

    Called for each request; cheap unless the thread is idle or not started.
    """
    global _idle, _thread
    if watch.watched and not _idle:
        return
    with _cond:
        watch.watched = True
        _watches.add(watch)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="s3torch-watchdog", daemon=True)
            _thread.start()
        _idle = False
        _cond.notify()


def _run() -> None:
    while True:
        try:
            _watch_once()
        except Exception:  # pragma: no cover - the watchdog must outlive any bug
            log.exception("the s3torch watchdog failed a round; it goes on")
            time.sleep(MAX_TICK)


def _watch_once() -> None:
    """Check every watch once, then sleep (for a tick, or until a request registers)."""
    global _idle
    with _cond:
        _idle = True  # before looking: a request registered after the look wakes us
        watches = list(_watches)
    tick = MAX_TICK
    busy = False
    now = time.monotonic()
    for watch in watches:
        expired, in_flight = watch.expired(now)
        if in_flight:
            busy = True
            tick = min(tick, watch.tick)
        for tracked in expired:
            with watch.lock:
                request = tracked.request
            if request is not None:  # else its start cancels it
                request.cancel()
    del watches
    with _cond:
        if busy or not _idle:
            _cond.wait(tick if busy else MIN_TICK)
        else:
            _cond.wait()


def _after_fork_in_child() -> None:
    """In a forked child: no watchdog thread exists; start from nothing.

    The parent's clients are parked in the child (never used), so their
    watches are simply forgotten.
    """
    global _cond, _watches, _idle, _thread
    _cond = threading.Condition()
    _watches = weakref.WeakSet()
    _idle = True
    _thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)
