"""The benchmark's latency proxy: responses arrive late, whole and in order."""

from __future__ import annotations

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
from locals3.pytest_plugin import boto3_client

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


def test_requests_in_flight_wait_once_not_one_after_another(
    slow_endpoint: str, bucket: str, boto3_s3: Any
) -> None:
    for index in range(8):
        boto3_s3.put_object(Bucket=bucket, Key=f"k{index}", Body=b"%d" % index)
    s3 = boto3_client(slow_endpoint)
    s3.head_bucket(Bucket=bucket)  # connections and credentials set up

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        bodies = list(
            pool.map(lambda i: s3.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read(), range(8))
        )
    elapsed = time.perf_counter() - started

    assert bodies == [b"%d" % index for index in range(8)]
    assert DELAY_S <= elapsed < 4 * DELAY_S  # one after another would take 8 x


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
