"""A loopback HTTP proxy in front of a local S3 server, for tests that need faults.

It forwards every request unchanged (the Host header included, so SigV4
signatures still verify upstream) and can, on the requests you choose:
answer with an S3 error, drop the connection, flip a byte of the request or
response body, or hold requests until several are in flight at once. It records
what it saw, headers included, so tests can check what the client sent.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._service import Service

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class SeenRequest:
    """One request as the proxy received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int


Match = Callable[[SeenRequest], bool]


@dataclass
class _Rule:
    action: str
    times: int
    when: Match
    status: int = 0
    code: str = ""
    hits: list[SeenRequest] = field(default_factory=list)


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
        self._rules: list[_Rule] = []
        self._lock = threading.Condition()
        self._hold_for = 0
        self._held = 0
        self._hold_timeout = 0.0
        self.hold_reached = False
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ faults
    def fail(self, status: int, code: str, *, times: int = 1, when: Match | None = None) -> None:
        """Answer the next ``times`` matching requests with an S3 error document."""
        self._add(_Rule("fail", times, when or _any, status, code))

    def reset(self, *, times: int = 1, when: Match | None = None) -> None:
        """Drop the connection (TCP reset) on the next ``times`` matching requests."""
        self._add(_Rule("reset", times, when or _any))

    def corrupt_request(self, *, times: int = 1, when: Match | None = None) -> None:
        """Flip one byte of the body of the next ``times`` matching requests."""
        self._add(_Rule("corrupt_request", times, when or _any))

    def corrupt_response(self, *, times: int = 1, when: Match | None = None) -> None:
        """Flip one byte of the response body of the next ``times`` matching requests."""
        self._add(_Rule("corrupt_response", times, when or _any))

    def hold_until_concurrent(self, count: int, timeout: float) -> None:
        """Hold requests until ``count`` are waiting at once (or ``timeout`` passes).

        ``hold_reached`` tells afterwards whether they ever were.
        """
        with self._lock:
            self._hold_for = count
            self._held = 0
            self._hold_timeout = timeout
            self.hold_reached = False

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.seen.clear()
            self.max_concurrent = 0
            self._hold_for = 0

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take(self, request: SeenRequest) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.when(request):
                    rule.times -= 1
                    rule.hits.append(request)
                    return rule
        return None

    def _hold(self) -> None:
        with self._lock:
            if not self._hold_for:
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
                seen = SeenRequest(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    len(body),
                )
                with proxy._lock:
                    proxy.seen.append(seen)
                    proxy._concurrent += 1
                    proxy.max_concurrent = max(proxy.max_concurrent, proxy._concurrent)
                try:
                    proxy._hold()
                    rule = proxy._take(seen)
                    action = rule.action if rule else "forward"
                    if action == "fail":
                        assert rule is not None
                        self._send_error(rule.status, rule.code)
                    elif action == "reset":
                        self._reset()
                    else:
                        if action == "corrupt_request" and body:
                            body = _flip(body)
                        self._forward(body, corrupt=action == "corrupt_response")
                finally:
                    with proxy._lock:
                        proxy._concurrent -= 1

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

            def _forward(self, body: bytes, corrupt: bool) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    upstream.request(self.command, self.path, body or None, headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                if corrupt and data:
                    data = _flip(data)
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one  # noqa: N815

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
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
