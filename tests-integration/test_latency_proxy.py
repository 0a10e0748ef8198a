"""The benchmark's latency proxy: responses arrive late, whole and in order."""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from locals3 import LatencyProxy, MotoServer

DELAY_S = 0.3


@pytest.fixture
def slow_endpoint(moto_server: MotoServer) -> Any:
    with LatencyProxy(moto_server.port, DELAY_S) as proxy:
        yield proxy.endpoint


def test_every_response_arrives_late_but_whole(
    slow_endpoint: str, bucket: str, boto3_s3: Any, make_client: Callable[..., Any]
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # many relayed chunks
    boto3_s3.put_object(Bucket=bucket, Key="k", Body=body)
    client = make_client(endpoint=slow_endpoint)

    started = time.perf_counter()
    got = client.get_object_stream(bucket, "k").read()
    elapsed = time.perf_counter() - started

    assert got == body
    assert elapsed >= DELAY_S


def test_connections_are_relayed_at_once_not_one_after_another() -> None:
    """Eight requests in flight through the relay all reach the server together.

    The server answers none until all eight have arrived: a relay that carried
    one connection (or one delayed response) at a time would never let them
    all through, and the server's barrier would break. No timing is measured;
    the timeouts only bound a hang.
    """
    count = 8
    arrived = threading.Barrier(count, timeout=60)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            try:
                arrived.wait()
            except threading.BrokenBarrierError:
                self.send_error(504, "not every request arrived")
                return
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def get(index: int) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=120)
        try:
            connection.request("GET", f"/k{index}")
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        with (
            LatencyProxy(server.server_address[1], DELAY_S) as proxy,
            ThreadPoolExecutor(count) as pool,
        ):
            results = list(pool.map(get, range(count)))
    finally:
        server.shutdown()
        server.server_close()
    assert results == [(200, f"/k{index}".encode()) for index in range(count)]
    assert not arrived.broken


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_s must be >= 0, got -1"):
        LatencyProxy(1, -1)


def test_a_server_that_drops_the_connection_ends_the_clients_too() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        connection, _ = listener.accept()
        connection.sendall(b"partial answer")
        time.sleep(0.1)
        # An abrupt close (RST): what a crashed server looks like.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    threading.Thread(target=serve_once, daemon=True).start()
    with (
        LatencyProxy(listener.getsockname()[1], 0.05) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client,
    ):
        received = b""
        try:
            while chunk := client.recv(1024):
                received += chunk
        except ConnectionResetError:
            pass
    listener.close()

    assert received == b"partial answer"  # what came before the drop, then the end
