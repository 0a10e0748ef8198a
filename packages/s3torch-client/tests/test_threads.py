"""ThreadGroup: no worker runs once the caller has moved on, whatever interrupted it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from s3torch.client.threads import ThreadGroup


def _ctrl_c() -> None:
    """A real SIGINT, as Ctrl-C sends: it interrupts a blocked join, unlike interrupt_main()."""
    os.kill(os.getpid(), signal.SIGINT)


def test_join_waits_for_every_target() -> None:
    finished: list[int] = []

    def work(number: int) -> None:
        time.sleep(0.05)
        finished.append(number)

    with ThreadGroup("t") as group:
        for number in range(4):
            group.start(work, number)
    assert sorted(finished) == [0, 1, 2, 3]
    assert group.error is None
    assert not group.stopping


def test_a_target_that_raises_stops_the_others_and_is_kept() -> None:
    seen_stop = threading.Event()

    def fail() -> None:
        raise OSError("disk on fire")

    def patient() -> None:
        deadline = time.monotonic() + 10
        while not group.stopping and time.monotonic() < deadline:
            time.sleep(0.001)
        if group.stopping:
            seen_stop.set()

    with ThreadGroup("t") as group:
        group.start(patient)
        group.start(fail)
    assert isinstance(group.error, OSError)
    assert str(group.error) == "disk on fire"
    assert seen_stop.is_set()


def test_a_target_started_after_a_stop_never_runs() -> None:
    ran: list[bool] = []
    with ThreadGroup("t") as group:
        group.request_stop()
        group.start(ran.append, True)
    assert ran == []


def test_an_exception_in_the_block_stops_the_workers_before_it_propagates() -> None:
    writes = bytearray(1)
    finished_before_exit = threading.Event()

    def writer() -> None:
        while not group.stopping:
            writes[0] = (writes[0] + 1) % 256
            time.sleep(0.0005)
        finished_before_exit.set()

    def caller() -> None:
        with group:
            group.start(writer)
            time.sleep(0.02)
            raise ValueError("caller failed")

    group = ThreadGroup("t")
    with pytest.raises(ValueError, match="caller failed"):
        caller()
    assert finished_before_exit.is_set()
    snapshot = bytes(writes)
    time.sleep(0.05)
    assert bytes(writes) == snapshot  # nothing writes after the block


def test_ctrl_c_during_the_wait_is_raised_after_every_worker_stopped() -> None:
    """KeyboardInterrupt while join() waits: the workers stop, then it surfaces, once."""
    state = {"running": 0, "stopped_in_time": 0}
    lock = threading.Lock()
    started = threading.Barrier(4)

    def slow_writer() -> None:
        with lock:
            state["running"] += 1
        started.wait()
        deadline = time.monotonic() + 30
        while not group.stopping and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)  # a last unit of work after the stop was seen
        with lock:
            state["running"] -= 1
            state["stopped_in_time"] += time.monotonic() < deadline

    group = ThreadGroup("t")
    for _ in range(3):
        group.start(slow_writer)
    started.wait()
    timer = threading.Timer(0.05, _ctrl_c)
    timer.start()
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        group.join()
    timer.join()
    assert state == {"running": 0, "stopped_in_time": 3}
    assert time.monotonic() - began < 5


def test_repeated_ctrl_c_does_not_cut_the_wait_short() -> None:
    """A second and third interrupt while waiting are absorbed; the first is raised."""
    done = threading.Event()

    def stubborn() -> None:
        deadline = time.monotonic() + 30
        while not group.stopping and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.3)  # slow to wind down: the interrupts below arrive meanwhile
        done.set()

    group = ThreadGroup("t")
    group.start(stubborn)

    def interrupt_thrice() -> None:
        for _ in range(3):
            time.sleep(0.05)
            _ctrl_c()

    interrupter = threading.Thread(target=interrupt_thrice)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            group.join()
        assert done.is_set()
    finally:
        interrupter.join()
