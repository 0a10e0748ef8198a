"""A loopback TCP relay that adds network latency in front of a local S3 server.

A local server answers a small GET in about a millisecond; Amazon S3 takes
tens. Code that keeps one request in flight is bound by that latency, code
that keeps many is not, and a benchmark on loopback alone cannot show the
difference. :class:`LatencyProxy` puts it back: every byte the server sends
reaches the client ``delay_s`` later (a one-way delay, like ``tc netem``), so
each request-response takes ``delay_s`` longer while the bandwidth, the
connections and the order of bytes stay as they were.

It works on bytes, not HTTP, so signatures, keep-alive and streaming are
untouched. It runs its own event loop on a daemon thread of the process that
starts it (the benchmark's orchestrator, not the measured client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from ._service import Service

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_QUEUED_CHUNKS = 256
"""Chunks held back per connection at most (16 MiB): the server waits beyond that."""


class LatencyProxy(Service):
    """Relay ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``, responses ``delay_s`` late."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LatencyProxy:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def serve() -> asyncio.Server:
            server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self._port = server.sockets[0].getsockname()[1]
            return server

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(serve())
            except BaseException as error:  # reported to start()
                failure.append(error)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:  # stopped: end every connection's relay before the loop goes
                server.close()
                # Cancelling a relay can start more tasks (a connection accepted
                # meanwhile, the relay's own copies): repeat until none is left,
                # so none is destroyed pending when the loop closes.
                while relays := asyncio.all_tasks(loop):
                    for relay in relays:
                        relay.cancel()
                    loop.run_until_complete(asyncio.gather(*relays, return_exceptions=True))
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        log.info(
            "latency proxy %s -> 127.0.0.1:%d, +%.1f ms per response",
            self.endpoint,
            self.upstream_port,
            self.delay_s * 1e3,
        )
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None
        self._port = 0

    # ---------------------------------------------------------------- relaying
    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError as error:
            log.warning("latency proxy: cannot reach 127.0.0.1:%d: %s", self.upstream_port, error)
            client_out.close()
            return
        directions = [
            asyncio.ensure_future(_copy(client_in, server_out)),
            asyncio.ensure_future(self._copy_late(server_in, client_out)),
        ]
        try:
            # Both ends done, or one side went away (an error): then close both.
            await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            # The proxy stops. End quietly: asyncio's server (3.11) reports a
            # connection handler that ends cancelled as an error.
            pass
        finally:
            for direction in directions:
                direction.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            for writer in (client_out, server_out):
                writer.close()

    async def _copy_late(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``sink``, each chunk written ``delay_s`` after it was read."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        room = asyncio.Semaphore(_QUEUED_CHUNKS)

        async def hold() -> None:
            try:
                while True:
                    await room.acquire()
                    chunk = await source.read(_CHUNK)
                    if not chunk:
                        break
                    held.put_nowait((loop.time() + self.delay_s, chunk))
            finally:  # the end, or the server went away: nothing more comes
                held.put_nowait((loop.time() + self.delay_s, b""))

        holder = asyncio.ensure_future(hold())
        try:
            while True:
                due, chunk = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()
                room.release()
            with contextlib.suppress(OSError):
                sink.write_eof()
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await holder


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(_CHUNK):
        sink.write(chunk)
        await sink.drain()
    with contextlib.suppress(OSError):
        sink.write_eof()
