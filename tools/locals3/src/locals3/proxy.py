"""A loopback HTTP proxy in front of a local S3 server, for tests that need faults.

It forwards every request unchanged (the Host header included, so SigV4
signatures still verify upstream) and plays faults (:class:`~locals3.faults.Fault`)
on the requests you choose, by kind (:class:`~locals3.faults.RequestKind`) or
any matcher, for a count or at a seeded rate: S3 errors, resets before or in
the middle of a body, lost responses, truncated bodies, flipped bytes, slow
first bytes, stalls, trickles, a dropped ``If-Match``. It can also hold
requests until several are in flight at once. It records what it saw,
headers included, so tests can check what the client sent.
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._service import Service
from .faults import Fault, FaultKind, Injection, RequestKind, kind_of

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class SeenRequest:
    """One request as the proxy received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int
    kind: RequestKind = RequestKind.OTHER
    response_bytes: int = 0
    """Body bytes the proxy sent back for it (set once the response is written)."""


Match = Callable[[SeenRequest], bool]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away before its answer (a process that exited)
        super().handle_error(request, client_address)


class FaultProxy(Service):
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``, with injected faults."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[SeenRequest] = []
        self.max_concurrent = 0
        self._concurrent = 0
        self._injections: list[tuple[Injection, Match]] = []
        self._lock = threading.Condition()
        self._hold_for = 0
        self._hold_kinds: frozenset[RequestKind] | None = None
        self._held = 0
        self._hold_timeout = 0.0
        self.hold_reached = False
        self._stopping = threading.Event()
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ faults
    def inject(
        self,
        fault: Fault,
        *,
        kinds: Iterable[RequestKind] | RequestKind | None = None,
        when: Match | None = None,
        times: int | None = 1,
        rate: float = 1.0,
        seed: int = 0,
    ) -> Injection:
        """Play ``fault`` on matching requests; returns the injection (its ``hits`` count).

        Args:
            fault: What to do.
            kinds: Only requests of these kinds (default: any).
            when: Only requests this matcher accepts (default: any).
            times: At most this many requests get it (None: no limit).
            rate: Each matching request gets it with this probability, drawn
                from a generator seeded with ``seed`` (1.0: every one).
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        if isinstance(kinds, RequestKind):
            kinds = (kinds,)
        wanted = None if kinds is None else frozenset(kinds)
        match = when or _any

        def matches(request: SeenRequest) -> bool:
            return (wanted is None or request.kind in wanted) and match(request)

        injection = Injection(fault, times, rate, random.Random(seed))
        with self._lock:
            self._injections.append((injection, matches))
        return injection

    def fail(self, status: int, code: str, *, times: int = 1, when: Match | None = None) -> None:
        """Answer the next ``times`` matching requests with an S3 error document."""
        self.inject(Fault.error(status, code), times=times, when=when)

    def reset(self, *, times: int = 1, when: Match | None = None) -> None:
        """Drop the connection (TCP reset) on the next ``times`` matching requests."""
        self.inject(Fault.reset_before(), times=times, when=when)

    def corrupt_request(self, *, times: int = 1, when: Match | None = None) -> None:
        """Flip one byte of the body of the next ``times`` matching requests."""
        self.inject(Fault.flip_request(), times=times, when=when)

    def corrupt_response(self, *, times: int = 1, when: Match | None = None) -> None:
        """Flip one byte of the response body of the next ``times`` matching requests."""
        self.inject(Fault.flip_response(), times=times, when=when)

    def hold_until_concurrent(
        self,
        count: int,
        timeout: float,
        kinds: Iterable[RequestKind] | RequestKind | None = None,
    ) -> None:
        """Hold requests until ``count`` are waiting at once (or ``timeout`` passes).

        ``kinds``: hold and count only requests of these kinds (default: any);
        the others pass (a listing that must answer before GETs can start).
        ``hold_reached`` tells afterwards whether they ever were.
        """
        if isinstance(kinds, RequestKind):
            kinds = (kinds,)
        with self._lock:
            self._hold_kinds = None if kinds is None else frozenset(kinds)
            self._hold_for = count
            self._held = 0
            self._hold_timeout = timeout
            self.hold_reached = False

    def clear(self) -> None:
        with self._lock:
            self._injections.clear()
            self.seen.clear()
            self.max_concurrent = 0
            self._hold_for = 0

    def _take(self, request: SeenRequest) -> Fault | None:
        with self._lock:
            injections = list(self._injections)
        for injection, matches in injections:
            if matches(request) and injection.take():
                return injection.fault
        return None

    def _hold(self, request: SeenRequest) -> None:
        with self._lock:
            if not self._hold_for:
                return
            if self._hold_kinds is not None and request.kind not in self._hold_kinds:
                return
            self._held += 1
            if self._held >= self._hold_for:
                self.hold_reached = True
                self._lock.notify_all()
                return
            self._lock.wait_for(lambda: self.hold_reached, self._hold_timeout)

    # ---------------------------------------------------------------- serving
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                seen = SeenRequest(
                    self.command,
                    self.path,
                    headers,
                    len(body),
                    kind_of(self.command, self.path, headers),
                )
                with proxy._lock:
                    proxy.seen.append(seen)
                    proxy._concurrent += 1
                    proxy.max_concurrent = max(proxy.max_concurrent, proxy._concurrent)
                try:
                    proxy._hold(seen)
                    self._play(proxy._take(seen), body, seen)
                finally:
                    with proxy._lock:
                        proxy._concurrent -= 1

            def _play(self, fault: Fault | None, body: bytes, seen: SeenRequest) -> None:
                kind = fault.kind if fault is not None else None
                if fault is not None and kind == FaultKind.ERROR:
                    self._send_error(fault.status, fault.code)
                    return
                if kind == FaultKind.RESET_BEFORE:
                    self._reset()
                    return
                if kind == FaultKind.STALL:
                    assert fault is not None
                    proxy._stopping.wait(fault.seconds)  # the client gives up first
                    self._reset()
                    return
                drop = ("if-match",) if kind == FaultKind.DROP_IF_MATCH else ()
                if kind == FaultKind.FLIP_REQUEST and body:
                    body = _flip(body)
                status, response_headers, data = self._forward(body, drop)
                if kind == FaultKind.LOST_RESPONSE:
                    self._reset()
                    return
                if kind == FaultKind.FLIP_RESPONSE and data:
                    data = _flip(data)
                if kind == FaultKind.FIRST_BYTE_DELAY:
                    assert fault is not None
                    proxy._stopping.wait(fault.seconds)
                self._respond(status, response_headers, data, fault)
                if self.command != "HEAD":
                    seen.response_bytes = len(data)

            def _send_error(self, status: int, code: str) -> None:
                document = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>injected by FaultProxy</Message>"
                    f"<RequestId>FAULTPROXY</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-amz-request-id", "FAULTPROXY")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(document)

            def _reset(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _forward(
                self, body: bytes, drop: tuple[str, ...]
            ) -> tuple[int, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    skip = {"connection", *drop}
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    upstream.request(self.command, self.path, body or None, headers)
                    response = upstream.getresponse()
                    data = response.read()
                    return response.status, response.getheaders(), data
                finally:
                    upstream.close()

            def _respond(
                self,
                status: int,
                headers: list[tuple[str, str]],
                data: bytes,
                fault: Fault | None,
            ) -> None:
                self.send_response(status)
                length = {k.lower(): v for k, v in headers}.get("content-length", "0")
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                kind = fault.kind if fault is not None else None
                if kind in (FaultKind.RESET_MID_BODY, FaultKind.TRUNCATED_BODY) and data:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if kind == FaultKind.RESET_MID_BODY:
                        self._reset()
                    else:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_WR)
                    return
                if kind == FaultKind.TRICKLE and data:
                    assert fault is not None
                    self._trickle(data, fault.bytes_per_second)
                    return
                self.wfile.write(data)

            def _trickle(self, data: bytes, rate: int) -> None:
                step = max(1, rate // 20)  # twenty writes a second
                for start in range(0, len(data), step):
                    if proxy._stopping.is_set():
                        self._reset()
                        return
                    try:
                        self.wfile.write(data[start : start + step])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        self.close_connection = True
                        return
                    time.sleep(step / rate)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one  # noqa: N815

        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._stopping.set()  # stalls and trickles end
            with self._lock:
                self.hold_reached = True  # release anything still held
                self._lock.notify_all()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _any(request: SeenRequest) -> bool:
    return True


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
