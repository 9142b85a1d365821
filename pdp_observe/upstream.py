"""The proxy's client for its one upstream: pooled keep-alive HTTP/1.1, parsed by llhttp.

Why not aiohttp's ClientSession: per request it builds a ClientRequest, a URL, a header
CIMultiDict, payload wrappers, timer contexts and trace hooks — about 40 % of the proxy
process's CPU per forwarded request on the benchmark (bench/proxy_overhead.py, py-spy), and
the reason recording could not beat a bare aiohttp proxy. The hop needs none of that: one
origin, headers already filtered, bytes in and bytes out. httptools (llhttp, the parser of
Node.js and uvicorn) parses in C; this module keeps only what forwarding needs: a LIFO pool
with a size limit, connect and read timeouts, streaming both ways with flow control, and
the one retry aiohttp makes for an idempotent request on a keep-alive connection the
upstream had just closed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any, AsyncIterator

import httptools
from yarl import URL

_perf = time.perf_counter
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Response bytes buffered before the socket stops being read (a slow client must not make
# the proxy hold a whole large answer in memory).
READ_HIGH_WATER = 256 * 1024
_DEC = ("utf-8", "surrogateescape")  # aiohttp's decoding of header bytes; round-trips any byte


class UpstreamError(Exception):
    """Base of what the pool raises for a failed exchange with the upstream."""


class UpstreamConnectError(UpstreamError):
    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class UpstreamConnectTimeout(UpstreamError):
    pass


class UpstreamReadTimeout(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    """The upstream closed or reset the connection before the answer was complete."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not a valid HTTP/1.1 response."""


class UpstreamResponse:
    """One answer: status line and raw headers at once, then the body as it arrives."""

    __slots__ = ("status", "reason", "raw_headers", "content_length", "keep_alive", "until_eof",
                 "connected_at", "_conn", "_chunks", "_buffered", "_done", "_exc", "_waiter",
                 "_reason", "_writer")

    def __init__(self, conn: "_Conn") -> None:
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.keep_alive = False
        self.until_eof = False  # no length and not chunked: the body ends when the connection does
        self.connected_at = 0.0
        self._conn: _Conn | None = conn
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reason = b""
        self._writer: asyncio.Future[None] | None = None

    def header(self, name: bytes) -> str | None:
        """First value of a header (``name`` lower-case)."""
        for k, v in self.raw_headers:
            if k.lower() == name:
                return v.decode(*_DEC)
        return None

    async def read(self) -> bytes:
        """The whole body (for answers known to be small)."""
        while not self._done:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        if self._exc is not None:
            raise self._exc
        return self._take()

    async def readany(self) -> bytes:
        """Whatever body bytes have arrived (waiting for some); b"" at the end."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._done:
                return b""
            await self._wait()
        return self._take()

    def release(self) -> None:
        """Give the connection back to the pool if it can carry another request, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reusable = self._done and self._exc is None and self.keep_alive and not conn.closed
        writer = self._writer
        if writer is not None:
            if not writer.done():
                writer.cancel()  # the upstream answered before the request body was all sent
                reusable = False
            elif writer.cancelled() or writer.exception() is not None:
                reusable = False
        conn.resp = None
        if reusable:
            conn.pool._put_back(conn)
        else:
            conn.abort()

    # -- fed by the connection ------------------------------------------------------------
    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self._buffered > READ_HIGH_WATER and self._conn is not None:
            self._conn.resume_reading()
        self._buffered = 0
        return data

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None and not self._done:
            self._exc = exc
        self._wake()

    async def _wait(self) -> None:
        conn = self._conn
        if conn is None:
            raise UpstreamDisconnected("response already released")
        loop = conn.pool.loop
        self._waiter = fut = loop.create_future()
        timer = None
        if conn.pool.read_timeout:
            timer = loop.call_later(conn.pool.read_timeout, self._read_timed_out, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _read_timed_out(self, fut: asyncio.Future[None]) -> None:
        if fut is self._waiter and not fut.done():
            self._fail(UpstreamReadTimeout(
                f"no data from the upstream for {self._conn.pool.read_timeout if self._conn else '?'} s"))
            if self._conn is not None:
                self._conn.abort()


class _Conn(asyncio.Protocol):
    """One upstream TCP connection; llhttp calls the ``on_*`` methods while it parses."""

    def __init__(self, pool: "UpstreamPool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: UpstreamResponse | None = None
        self.closed = False
        self.reused = False
        self.head_only = False
        self.interim = False
        self.idle_since = 0.0
        self.read_paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.resp is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.resp is not None:
                self.resp._fail(UpstreamProtocolError(f"malformed response from the upstream: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        resp = self.resp
        if resp is not None and not resp._done:
            if resp.status and resp.until_eof and exc is None:
                resp._done = True
                resp._wake()
            else:
                resp._fail(UpstreamDisconnected(
                    "upstream closed the connection" + (f": {exc!r}" if exc else "")))
        d = self._drain
        if d is not None and not d.done():
            d.set_exception(UpstreamDisconnected("upstream closed the connection while the request was sent"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    # -- llhttp callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        resp = self.resp
        if resp is None or resp._done:
            # a second answer to one request (or the start of one): it belongs to nobody, and
            # parsed on it would rewrite the status and headers of the answer being relayed or
            # poison the connection for the next request; feed_data raises, the conn is dropped
            raise UpstreamProtocolError("the upstream sent bytes after its answer")

    def on_status(self, status: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:  # 100 Continue and friends: the real answer follows
            self.interim = True
            resp.raw_headers = []
            resp._reason = b""
            return
        resp.status = status
        resp.reason = resp._reason.decode(*_DEC)
        resp.keep_alive = self.parser.should_keep_alive()
        chunked = False
        for k, v in resp.raw_headers:
            n = len(k)
            if n == 14 and k.lower() == b"content-length":
                try:
                    resp.content_length = int(v)
                except ValueError:
                    pass
            elif n == 17 and k.lower() == b"transfer-encoding":
                chunked = b"chunked" in v.lower()
        if self.head_only:
            # llhttp cannot be told the answer is to HEAD; end here and never reuse the socket
            resp._done = True
            resp.keep_alive = False
        elif resp.content_length is None and not chunked and status not in (204, 304):
            resp.until_eof = True
        resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None or resp._done:
            return
        resp._chunks.append(body)
        resp._buffered += len(body)
        if resp._buffered > READ_HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        resp._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        resp = self.resp
        if resp is not None:
            resp._done = True
            resp._wake()

    # -- helpers ----------------------------------------------------------------------------
    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True  # unusable now: connection_lost only runs on a later loop pass
            self.transport.abort()

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamDisconnected("upstream closed the connection while the request was sent")
        if self.write_paused:
            self._drain = self.pool.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def send_stream(self, chunks: AsyncIterator[bytes], chunked: bool, resp: UpstreamResponse) -> None:
        """Write a streamed request body (chunk-framed when the client sent no length)."""
        t = self.transport
        assert t is not None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if self.closed:
                    raise UpstreamDisconnected("upstream closed the connection while the request was sent")
                if chunked:
                    t.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    t.write(chunk)
                if self.write_paused:
                    await self.drain()
            if chunked and not self.closed:
                t.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            resp._fail(exc)  # the waiting handler sees why; the connection is not reused
            self.abort()
            raise


class UpstreamPool:
    """Keep-alive connections to one origin, most recently used first, at most ``limit`` open.

    LIFO matters: connections idle since a burst may have been paced down by the kernel's
    congestion control and stall large responses for 50–100 ms (docs/performance.md); the
    most recently used one is warm.
    """

    def __init__(self, origin: str, *, limit: int = 100, connect_timeout: float | None = 5.0,
                 read_timeout: float | None = 300.0, keepalive: float = 30.0) -> None:
        url = URL(origin)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be an http:// or https:// URL, got {origin!r}")
        self.host = url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if url.scheme == "https" else None
        # what aiohttp sends as Host: the default port left out, IPv6 in brackets
        self.host_header = url.host_port_subcomponent or self.host
        self.path_prefix = url.raw_path.rstrip("/")
        self.limit = limit
        self.connect_timeout = connect_timeout or None
        self.read_timeout = read_timeout or None
        self.keepalive = keepalive
        self.loop = asyncio.get_running_loop()
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closing = False

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def request(self, method: str, head: bytes, body: bytes | None,
                      stream: AsyncIterator[bytes] | None = None, *, chunked: bool = False) -> UpstreamResponse:
        """Send one request and wait for its status and headers; the body is read from the result.

        The caller must ``release()`` the response. A request that fails before any answer on
        a reused connection is sent once more on a new one when it is idempotent and its body
        is in hand (the upstream may have closed the idle connection as we wrote to it).
        """
        retry = stream is None and method in IDEMPOTENT
        fresh = False
        while True:
            conn = await self._acquire(fresh)
            resp = UpstreamResponse(conn)
            resp.connected_at = _perf()
            conn.resp = resp
            conn.head_only = method == "HEAD"
            t = conn.transport
            assert t is not None
            try:
                if stream is None:
                    t.write(head + body if body else head)
                else:
                    t.write(head)
                    resp._writer = asyncio.ensure_future(conn.send_stream(stream, chunked, resp))
                while not resp.status:
                    if resp._exc is not None:
                        raise resp._exc
                    await resp._wait()
                return resp
            except UpstreamDisconnected:
                resp.release()
                if retry and conn.reused and not resp._reason and not resp.raw_headers:
                    retry, fresh = False, True
                    continue
                raise
            except BaseException:
                resp.release()
                raise

    async def _acquire(self, fresh: bool = False) -> _Conn:
        loop = self.loop
        while True:
            idle = self._idle
            while idle and not fresh:
                conn = idle.pop()
                if conn.closed:
                    continue
                if loop.time() - conn.idle_since > self.keepalive:
                    conn.abort()
                    continue
                conn.reused = True
                return conn
            if not self.limit or len(self._all) + self._opening < self.limit:
                break
            if fresh and idle:  # make room for the new connection
                idle.pop(0).abort()
                continue
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                elif fut.done() and not fut.cancelled():
                    self._wake_one()  # we were woken and are leaving: pass it on
                raise
        if self._closing:
            raise UpstreamDisconnected("the proxy is shutting down")
        self._opening += 1
        try:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Conn(self), self.host, self.port, ssl=self.ssl),
                    self.connect_timeout)
            except (asyncio.TimeoutError, TimeoutError) as exc:
                raise UpstreamConnectTimeout(f"no connection to the upstream within {self.connect_timeout} s") from exc
            except OSError as exc:
                raise UpstreamConnectError(exc) from exc
        finally:
            self._opening -= 1
            self._wake_one()
        if conn.closed:
            raise UpstreamDisconnected("upstream closed the connection as it was opened")
        self._all.add(conn)
        return conn

    def _put_back(self, conn: _Conn) -> None:
        if self._closing or conn.closed:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._wake_one()

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def close(self) -> None:
        """Close every connection (idle ones now; busy ones are aborted)."""
        self._closing = True
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamDisconnected("the proxy is shutting down"))
        await asyncio.sleep(0)
