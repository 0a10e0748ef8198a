"""Ctrl-C (a real SIGINT) at any moment of dcp.save, dcp.load or dcp.async_save.

Each case runs interrupt_job.py in a subprocess on 64 MiB (one 48 MiB
tensor), sends SIGINT some time after the DCP call began, and checks: the
program ends by the KeyboardInterrupt path (never a crash), promptly (not
after the rest of the file went up or came down), no s3torch thread is left
running and none writes into the state dict any more, and a save leaves
nothing behind (no object, no open multipart upload, no .metadata), an
asynchronous one the whole checkpoint or nothing.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from locals3.pytest_plugin import empty_and_remove, new_bucket_name
from s3torch.dcp import S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

JOB = Path(__file__).with_name("interrupt_job.py")
DELAYS = (0.0, 0.05, 0.15, 0.3, 0.6)
"""Seconds from the DCP call to the SIGINT (the job's save or load takes 0.4 to 3 s here).

Where the call ended before the SIGINT came, the case is run again with half
the delay (a few times): the SIGINT must land inside the call."""
TRIES = 4
SECOND_SIGINT_AFTER = 0.02
PROMPT_SECONDS = 2.0
"""How soon after the SIGINT the DCP call must have raised: a few parts' transfers, not a file's."""
START_TIMEOUT = 120.0
EXIT_TIMEOUT = 120.0
INTERRUPTED = {"KeyboardInterrupt", "CheckpointException[KeyboardInterrupt]"}


@dataclass
class Run:
    """What an interrupted job printed and how it ended."""

    returncode: int
    lines: list[str]
    stderr: str
    sent_at: float

    def line(self, word: str) -> list[str] | None:
        for line in self.lines:
            parts = line.split()
            if parts and parts[0] == word:
                return parts[1:]
        return None

    @property
    def finished_first(self) -> bool:
        """Whether the DCP call returned before the SIGINT came."""
        return self.line("DONE") is not None

    def check_interrupted(self, *, background: bool = False) -> None:
        """The KeyboardInterrupt path, promptly, with no s3torch thread left running.

        ``background``: an asynchronous save's upload may go on after the interrupt.
        """
        context = f"returncode {self.returncode}\nstdout: {self.lines}\nstderr: {self.stderr}"
        assert self.returncode not in (0, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGKILL), (
            context
        )
        assert self.line("DONE") is None, f"the SIGINT came after the call returned\n{context}"
        raised = self.line("RAISED")
        assert raised is not None, context
        assert raised[1] in INTERRUPTED, context
        # Uncaught, torch's CheckpointException exits with status 1; a plain
        # KeyboardInterrupt, as Python does, by SIGINT.
        expected = 1 if raised[1].startswith("CheckpointException") else -signal.SIGINT
        assert self.returncode == expected, context
        assert "KeyboardInterrupt" in self.stderr, context
        latency = float(raised[0]) - self.sent_at
        assert latency < PROMPT_SECONDS, f"raised {latency:.2f} s after the SIGINT\n{context}"
        if not background:
            assert self.line("THREADS") == [], context


def run_interrupted(
    mode: str,
    endpoint: str,
    uri: str,
    delay: float,
    threads: int,
    *,
    fresh: bool = False,
    twice: bool = False,
) -> tuple[Run, str]:
    """Run the job, SIGINT it ``delay`` seconds after its DCP call began, wait for its end.

    If the call ended before the SIGINT, again with half the delay (a few
    times). ``fresh``: each try at a location of its own, ``<uri>-<try>``.
    ``twice``: a second SIGINT follows the first (an impatient user).
    The last run and its location.
    """
    for attempt in range(TRIES):
        location = f"{uri}-{attempt}" if fresh else uri
        run = run_once(mode, endpoint, location, delay / 2**attempt, threads, twice)
        if not run.finished_first:
            break
    return run, location


def run_once(
    mode: str, endpoint: str, uri: str, delay: float, threads: int, twice: bool = False
) -> Run:
    """Run the job, SIGINT it ``delay`` seconds after its DCP call began, wait for its end."""
    process = subprocess.Popen(
        [sys.executable, str(JOB), mode, endpoint, uri, str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())
        lines.put(None)

    def pump_stderr() -> None:
        assert process.stderr is not None
        stderr.append(process.stderr.read())

    pumps = [threading.Thread(target=pump, daemon=True) for pump in (pump_stdout, pump_stderr)]
    for pump in pumps:
        pump.start()
    seen: list[str] = []
    try:
        while not seen or not seen[-1].startswith("START"):
            line = lines.get(timeout=START_TIMEOUT)
            assert line is not None, f"the job ended before its DCP call: {seen}"
            seen.append(line)
        time.sleep(delay)
        sent_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        if twice:
            time.sleep(SECOND_SIGINT_AFTER)
            process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for pump in pumps:
        pump.join(timeout=10)
    while True:
        line = lines.get(timeout=10)
        if line is None:
            break
        seen.append(line)
    return Run(returncode, seen, "".join(stderr), sent_at)


def check_whole_or_nothing(
    location: str, files: int, keys_under: Callable[[str], list[str]], **options: Any
) -> None:
    """Nothing at ``location``, or (the SIGINT came after it was published) the whole checkpoint."""
    keys = keys_under(location.split("/", 3)[3] + "/")
    if not keys:
        return
    assert keys == [".metadata", *(f"__0_{number}.distcp" for number in range(files))]
    expected = job_module().state()
    loaded = {key: torch.zeros_like(value) for key, value in expected.items()}
    with S3StorageReader(path=location, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def job_module() -> Any:
    sys.path.insert(0, str(JOB.parent))
    try:
        import interrupt_job
    finally:
        sys.path.remove(str(JOB.parent))
    return interrupt_job


@pytest.mark.parametrize(
    ("delay", "threads", "twice"),
    [(delay, 1 + number % 2, False) for number, delay in enumerate(DELAYS)]
    + [(0.05, 1, True), (0.15, 2, True)],
)
def test_an_interrupted_save_raises_keyboard_interrupt_and_leaves_nothing(
    options: dict[str, Any],
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
    delay: float,
    threads: int,
    twice: bool,
) -> None:
    endpoint = options["endpoint"]
    run, location = run_interrupted(
        "save", endpoint, checkpoint_uri, delay, threads, fresh=True, twice=twice
    )
    run.check_interrupted()
    # Each file's upload took at most about two parts more (the write under
    # way when the stop came), not the rest of the file.
    sent_after = run.line("SENT_AFTER")
    assert sent_after is not None, run.lines
    assert int(sent_after[0]) <= threads * 2 * job_module().PART_SIZE, run.lines
    assert open_uploads() == []
    # No data file and no .metadata; or, where the SIGINT came after the
    # checkpoint was published, all of it.
    check_whole_or_nothing(location, threads, keys_under, **options)


@pytest.fixture(scope="module")
def saved(s3_region: str, s3_endpoint: str, boto3_s3: Any) -> Iterator[str]:
    """A checkpoint of the job's state, saved once for the load cases (its own bucket)."""
    name = new_bucket_name()
    boto3_s3.create_bucket(Bucket=name)
    uri = f"s3://{name}/ckpt"
    writer = S3StorageWriter(s3_region, uri, endpoint=s3_endpoint, thread_count=2)
    with writer:
        dcp.save(job_module().state(), storage_writer=writer)
    yield uri
    empty_and_remove(boto3_s3, name)


@pytest.mark.parametrize(("delay", "twice"), [(delay, False) for delay in DELAYS] + [(0.05, True)])
def test_an_interrupted_load_raises_keyboard_interrupt_and_stops_writing(
    s3_endpoint: str, saved: str, delay: float, twice: bool
) -> None:
    run, _ = run_interrupted("load", s3_endpoint, saved, delay, 4, twice=twice)
    run.check_interrupted()
    assert run.line("STABLE") == [], run.lines  # nothing writes into the tensors any more


@pytest.mark.parametrize("delay", DELAYS)
def test_an_interrupted_async_save_leaves_the_whole_checkpoint_or_nothing(
    options: dict[str, Any],
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
    delay: float,
) -> None:
    endpoint = options["endpoint"]
    run, location = run_interrupted("async_save", endpoint, checkpoint_uri, delay, 2, fresh=True)
    run.check_interrupted(background=True)
    assert open_uploads() == []
    # Interrupted while staging: nothing; else the upload in the background
    # went on to the end before the process exited.
    check_whole_or_nothing(location, 2, keys_under, **options)
