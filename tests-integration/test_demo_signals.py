"""The demo stops cleanly on Ctrl-C, ``kill`` and a closed terminal (issue 24, item 3).

Each case runs the README's demo (SeaweedFS, the default server) in a session of
its own, waits until it is at work, sends the signal the way a terminal or
``kill`` would, and checks that it ends within 2 s with one line and no
traceback, and that neither its server, nor any other process of it, nor a
temporary file of it is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

EXIT_WITHIN_S = 2.0
READY_WITHIN_S = 180.0


class Output:
    """Everything a process writes, collected by a thread as it arrives."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        assert process.stdout is not None
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._stream.read1(4096):
            with self._lock:
                self.text += chunk.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> int:
        """Wait until ``needle`` appears; return how much had arrived by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if needle in self.text:
                    return len(self.text)
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} never came; the demo wrote:\n{self.text}")

    def close(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        return self.text


def _listening_ports(process: psutil.Process) -> set[int]:
    return {c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("signum", "whole_group", "when"),
    [
        # A terminal's Ctrl-C and hangup go to its foreground process group; kill to one PID.
        pytest.param(signal.SIGINT, True, "upload 500 x", id="ctrl-c-while-uploading"),
        pytest.param(signal.SIGTERM, False, "upload 500 x", id="kill-while-uploading"),
        pytest.param(signal.SIGHUP, True, "DataLoader, map dataset", id="hangup-in-dataloader"),
    ],
)
def test_a_signal_stops_the_demo_and_its_server_leaving_nothing(
    repo: Path, tmp_path: Path, signum: signal.Signals, whole_group: bool, when: str
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    demo = subprocess.Popen(
        [sys.executable, "-u", str(repo / "tools/demo.py"), "--large-mib", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a shell's job has
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )
    output = Output(demo)
    descendants: list[psutil.Process] = []
    try:
        output.wait_for("s3torch demo against http://127.0.0.1:", READY_WITHIN_S)
        before = output.wait_for(when, READY_WITHIN_S)
        descendants = psutil.Process(demo.pid).children(recursive=True)
        weed = [p for p in descendants if p.name() == "weed"]
        assert len(weed) == 1, descendants
        server_pid, server_pgid = weed[0].pid, os.getpgid(weed[0].pid)
        ports = _listening_ports(weed[0])
        assert ports, "the server listens on no port"

        sent = time.monotonic()
        if whole_group:
            os.killpg(demo.pid, signum)
        else:
            demo.send_signal(signum)
        returncode = demo.wait(timeout=30)
        took = time.monotonic() - sent
        text = output.close()
        after = text[before:]

        assert took < EXIT_WITHIN_S, f"the demo took {took:.1f} s to end:\n{text}"
        assert returncode == -signum, (returncode, text)  # it dies of the signal, as it should
        assert "Traceback" not in text, text
        lines = [line for line in after.splitlines()[1:] if line.strip()]
        assert lines == [
            f"interrupted ({signum.name}): stopping the seaweedfs server and removing its files"
        ], after
        assert not _alive(server_pid), "the SeaweedFS server is still running"
        assert not _group_exists(server_pgid), "a process of the server's group is left"
        assert not _group_exists(demo.pid), "a process of the demo is left (a DataLoader worker?)"
        assert not [p.pid for p in descendants if _alive(p.pid)]
        assert list(tmpdir.iterdir()) == [], "the demo left temporary files"
        sockets = [f"seaweedfs-*-{port}.sock" for port in ports]
        assert not [path for glob in sockets for path in Path("/tmp").glob(glob)], sockets
    finally:
        for group in {demo.pid, *(os.getpgid(p.pid) for p in descendants if _alive(p.pid))}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(10)
        for process in descendants:
            with contextlib.suppress(psutil.Error):
                process.kill()
