"""The watchdog's stall rules, as pure logic on a fake clock (the CRT is not involved).

The fault-proxy tests (test_timeouts.py) show the limits end real requests.
Some situations the proxy cannot play: a slow link shared by many requests
(the proxy throttles each connection on its own), where requests finish
together, late. These tests drive :class:`ClientWatch` directly: requests
start and finish when the test says, at the times it says.
"""

from __future__ import annotations

from typing import Any

import pytest

from s3torch.client import S3ClientConfig, _watchdog
from s3torch.client._watchdog import ClientWatch, Tracked

MiB = 1024 * 1024
PART = 8 * MiB


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Request:
    """Stands in for awscrt's S3Request: only ``cancel`` is called on it."""

    def cancel(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_watchdog.time, "monotonic", fake)
    return fake


def _watch(**config: Any) -> ClientWatch:
    return ClientWatch(S3ClientConfig(**config))


def _start(watch: ClientWatch, size: int, operation: str = "GetObject") -> Tracked:
    tracked = Tracked(
        watch, operation=operation, bucket="b", key="k", size=size, launch=lambda t: _Request()
    )
    with watch.lock:  # register without waking this process's watchdog thread
        watch._advance(_watchdog.time.monotonic())
        tracked.started = _watchdog.time.monotonic()
        watch._enter(tracked, tracked.started)
    return tracked


def _finish(watch: ClientWatch, tracked: Tracked) -> None:
    assert watch.finish(tracked, None) == _watchdog._PASS


def _expired(watch: ClientWatch, clock: Clock) -> list[Tracked]:
    found, _ = watch.expired(clock.now)
    return found


def test_a_lone_request_is_allowed_stall_timeout_per_4_mib(clock: Clock) -> None:
    watch = _watch(stall_timeout=10.0)
    head = _start(watch, 0, "HeadObject")
    clock.now += 9.9
    assert _expired(watch, clock) == []
    clock.now += 0.2
    assert _expired(watch, clock) == [head]
    assert head.expired == "stall_timeout"
    assert "nothing arrived on this client for 10.1 s" in head.why
    watch = _watch(stall_timeout=10.0)
    part = _start(watch, PART)  # 8 MiB: two periods
    clock.now += 19.9
    assert _expired(watch, clock) == []
    clock.now += 0.2
    assert _expired(watch, clock) == [part]


def test_requests_finishing_together_on_a_slow_shared_link_are_not_stalled(
    clock: Clock,
) -> None:
    # 2.5 MB/s shared by 12 parts of 8 MiB: they finish together after 40 s, twice
    # their own allowance; the rate seen so far says the bytes on the wire take that.
    watch = _watch(stall_timeout=10.0)
    first = _start(watch, PART)
    clock.now += PART / 2.5e6
    _finish(watch, first)
    assert watch.rate == pytest.approx(2.5e6, rel=0.01)
    group = [_start(watch, PART) for _ in range(12)]
    clock.now += 12 * PART / 2.5e6  # 40 s
    assert _expired(watch, clock) == []
    for tracked in group:
        _finish(watch, tracked)
    assert watch.in_flight() == 0


def test_many_parts_sent_at_once_with_no_rate_known_get_the_floor_for_all_their_bytes(
    clock: Clock,
) -> None:
    # An upload's first parts go out together: 12 x 8 MiB at the floor rate of
    # 4 MiB per stall_timeout is 240 s, not the 20 s one part alone would get.
    watch = _watch(stall_timeout=10.0)
    parts = [_start(watch, PART, "UploadPart") for _ in range(12)]
    clock.now += 239
    assert _expired(watch, clock) == []
    clock.now += 2
    assert set(_expired(watch, clock)) == set(parts)


def test_a_dead_server_is_found_quickly_once_the_client_has_seen_a_fast_link(
    clock: Clock,
) -> None:
    watch = _watch(stall_timeout=10.0)
    first = _start(watch, PART)
    clock.now += 0.08  # 100 MB/s
    _finish(watch, first)
    windows = [_start(watch, PART) for _ in range(12)]  # then nothing ever answers
    clock.now += 19.9
    assert _expired(watch, clock) == []
    clock.now += 0.2  # each window's own allowance: 20 s
    assert set(_expired(watch, clock)) == set(windows)


def test_requests_queued_beyond_the_connections_do_not_count_as_bytes_on_the_wire(
    clock: Clock,
) -> None:
    watch = _watch(stall_timeout=10.0, throughput_target_gbps=1.0)  # 10 connections
    queued = [_start(watch, PART) for _ in range(100)]
    clock.now += 10 * 20 + 1  # the 10 oldest drain at the floor rate: 200 s
    assert set(_expired(watch, clock)) == set(queued)


def test_a_request_that_later_ones_keep_overtaking_is_stalled(clock: Clock) -> None:
    watch = _watch(stall_timeout=10.0, throughput_target_gbps=1.0)  # 10 connections
    stuck = _start(watch, 100_000)  # a small GET that trickles
    for _ in range(21):  # more than two rounds of the pool (2 x 10 x 8 MiB), sent after it
        clock.now += 0.1
        later = _start(watch, PART)
        clock.now += 0.1
        _finish(watch, later)
    assert _expired(watch, clock) == []  # not yet silent for its own allowance
    while clock.now - stuck.attempt_started < 10.5:  # the client keeps progressing
        clock.now += 1
        _finish(watch, _start(watch, 1000))
    assert _expired(watch, clock) == [stuck]
    assert "requests sent after it moved 168 MiB" in stuck.why


def test_a_request_behind_progressing_ones_is_not_overtaken(clock: Clock) -> None:
    # Queued behind 50 requests in flight: those finish first, in order; it is not
    # stalled however long it waits, as long as the client keeps progressing.
    watch = _watch(stall_timeout=10.0)
    ahead = [_start(watch, PART) for _ in range(50)]
    waiting = _start(watch, PART)
    for tracked in ahead:
        clock.now += 2  # a response every 2 s, for 100 s
        _finish(watch, tracked)
        assert _expired(watch, clock) == []
    assert waiting.expired is None


def test_request_timeout_counts_from_the_first_attempt(clock: Clock) -> None:
    watch = _watch(stall_timeout=None, request_timeout=30.0)
    tracked = _start(watch, PART)
    clock.now += 29
    assert _expired(watch, clock) == []
    clock.now += 2
    assert _expired(watch, clock) == [tracked]
    assert tracked.expired == "request_timeout"
