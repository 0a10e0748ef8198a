"""moto's S3 server in a child process on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from ._process import free_port, spawn, stop, wait_for_port
from ._service import Service

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


class MotoServer(Service):
    """A real S3 endpoint, ``http://127.0.0.1:<port>``, served by ``moto.server``.

    moto is slow (a ranged GET costs time proportional to the object) but
    complete and quick to start: the right server for correctness tests. It
    does not verify signatures and stores no upload checksums.
    """

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        self._env = env or {}
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log")  # noqa: SIM115
        self._process = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self._log,
            env={**os.environ, **self._env},
        )
        if not wait_for_port(self.port, timeout=60):
            self.stop()
            raise RuntimeError(f"moto did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process, grace=1.0)  # moto ends at once on SIGTERM
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
