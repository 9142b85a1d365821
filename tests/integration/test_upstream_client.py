"""The proxy's own upstream client (pdp_observe/upstream.py) on the wire: what a user notices.

Each test puts a small raw asyncio server on loopback behind a real sidecar, so the upstream's
exact bytes (and what it receives) are under the test's control: connections closed while idle
or right after a request arrives, interim 1xx answers, close-delimited bodies, the pool limit,
malformed answers, chunked uploads, early answers to a large upload, non-ASCII header bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pdp_observe.sidecar import Sidecar, start_sidecar
from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings

STEP = 10.0  # bound on any single wait in this file (seconds)


# -- a raw upstream ---------------------------------------------------------------------------

class Request:
    """One request as the upstream read it off the socket."""

    def __init__(self, head: bytes, body: bytes, raw_body: bytes, conn: int) -> None:
        self.head = head
        self.body = body          # decoded (chunk framing removed)
        self.raw_body = raw_body  # the bytes after the head, exactly as received
        self.conn = conn
        lines = head.split(b"\r\n")
        self.line = lines[0]
        self.method, self.target, _ = self.line.split(b" ", 2)
        self.headers = [tuple(h.split(b": ", 1)) for h in lines[1:] if h]

    def header_values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP))[:-4]


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Parse a chunk-framed body strictly; returns (body, raw bytes). Bounded by its own framing."""
    body, raw = bytearray(), bytearray()
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), STEP)
        raw += line
        size_text = line[:-2]
        assert size_text and all(c in b"0123456789abcdefABCDEF" for c in size_text), line
        size = int(size_text, 16)
        if size == 0:
            end = await asyncio.wait_for(reader.readexactly(2), STEP)  # no trailers expected
            raw += end
            assert end == b"\r\n", end
            return bytes(body), bytes(raw)
        data = await asyncio.wait_for(reader.readexactly(size + 2), STEP)
        raw += data
        assert data[-2:] == b"\r\n", "chunk not followed by CRLF"
        body += data[:-2]


async def read_request(reader: asyncio.StreamReader, conn: int) -> Request:
    head = await read_head(reader)
    req = Request(head, b"", b"", conn)
    if b"chunked" in b",".join(req.header_values(b"transfer-encoding")).lower():
        req.body, req.raw_body = await read_chunked(reader)
    elif lens := req.header_values(b"content-length"):
        req.body = req.raw_body = await asyncio.wait_for(reader.readexactly(int(lens[0])), STEP)
    return req


Handler = Callable[["RawUpstream", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawUpstream:
    """asyncio.start_server on 127.0.0.1:0 running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read(self, reader: asyncio.StreamReader, conn: int) -> Request:
        req = await read_request(reader, conn)
        self.requests.append(req)
        return req

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = self.connections
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(self, reader, writer, conn)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the test is over (asyncio's stream callback must not see it)
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.transport.abort()

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STEP)
        await asyncio.wait_for(self._server.wait_closed(), STEP)


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + b"".join(h + b"\r\n" for h in extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def drain_until_eof(reader: asyncio.StreamReader) -> None:
    """Read and discard until the peer closes (bounded: the peer is the sidecar, which closes)."""
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        if not await asyncio.wait_for(reader.read(65536), STEP):
            return


@contextlib.asynccontextmanager
async def sidecar_for(up: RawUpstream, tmp_path: Path, **settings: object) -> AsyncIterator[Sidecar]:
    sc = await start_sidecar(make_settings(up.url, tmp_path / "c.db", **settings))
    try:
        yield sc
    finally:
        await sc.stop()


# -- a raw client -----------------------------------------------------------------------------

def dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    for _ in range(len(data) + 1):  # each pass consumes at least one byte
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[eol + 2: eol + 2 + size]
        pos = eol + 2 + size + 2
    raise AssertionError("unterminated chunked body")


async def fetch(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send ``request`` (which asks for Connection: close) and read the answer until the sidecar
    closes; returns (status, raw head, body with any chunk framing removed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), STEP)
    finally:
        writer.close()
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    status = int(head.split(b" ", 2)[1])
    if b"\r\ntransfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, head, body


def get(path: bytes, method: bytes = b"GET", body: bytes | None = None) -> bytes:
    head = method + b" " + path + b" HTTP/1.1\r\nHost: app\r\nConnection: close\r\n"
    if body is not None:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + (body or b"")


def rows(sc: Sidecar, n: int) -> list:
    return StoreReader(sc.settings.db).last(n)  # the newest n, oldest first


# -- 1. keep-alive connections the upstream closes ---------------------------------------------

async def test_idle_keepalive_connection_closed_by_upstream_next_get_uses_a_new_one(tmp_path):
    async def handler(up: RawUpstream, reader, writer, conn):
        await up.read(reader, conn)
        writer.write(ok(b"conn-%d" % conn))  # keep-alive answer...
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # ...then the upstream drops the idle connection (its keep-alive timeout)

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        status, _, body = await fetch(sc.port, get(b"/a"))
        assert (status, body) == (200, b"conn-1")
        for _ in range(200):  # until the sidecar has seen the close of its idle connection
            if sc.proxy.pool.open_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert sc.proxy.pool.open_connections == 0
        status, _, body = await fetch(sc.port, get(b"/b"))
        assert (status, body) == (200, b"conn-2")
        assert [(r.target, r.conn) for r in up.requests] == [(b"/a", 1), (b"/b", 2)]
        await await_stored(sc, 2)
        assert [(r.path, r.status, r.failure) for r in rows(sc, 2)] == [("/a", 200, None), ("/b", 200, None)]


def close_on_second_request(answer_fresh_after_first: bool = True):
    """Answer the first request on connection 1 (keep-alive); close any later request on it
    right after reading it, without a byte of answer. Requests on later connections are answered
    unless ``answer_fresh_after_first`` is False (then they are dropped the same way)."""
    async def handler(up: RawUpstream, reader, writer, conn):
        n = 0
        for _ in range(10):
            req = await up.read(reader, conn)
            n += 1
            if (conn == 1 and n == 1) or (conn > 1 and answer_fresh_after_first):
                writer.write(ok(b"%s on conn %d" % (req.target, conn)))
                await writer.drain()
                continue
            writer.close()  # FIN right after reading the request: the race a pool must survive
            return
    return handler


@pytest.mark.parametrize("pool_size", [100, 1])
async def test_get_on_reused_connection_closed_before_answer_is_retried_once_on_a_fresh_one(tmp_path, pool_size):
    async with RawUpstream(close_on_second_request()) as up, \
            sidecar_for(up, tmp_path, upstream_pool_size=pool_size) as sc:
        status, _, body = await fetch(sc.port, get(b"/first"))
        assert (status, body) == (200, b"/first on conn 1")
        status, _, body = await fetch(sc.port, get(b"/second"))
        assert (status, body) == (200, b"/second on conn 2")
        # the upstream saw the GET twice: on the reused connection, then once more on a new one
        assert [(r.target, r.conn) for r in up.requests] == [(b"/first", 1), (b"/second", 1), (b"/second", 2)]
        await await_stored(sc, 2)
        assert [(r.path, r.status, r.failure) for r in rows(sc, 2)] == [("/first", 200, None),
                                                                       ("/second", 200, None)]


async def test_get_retry_happens_only_once(tmp_path):
    async with RawUpstream(close_on_second_request(answer_fresh_after_first=False)) as up, \
            sidecar_for(up, tmp_path) as sc:
        assert (await fetch(sc.port, get(b"/first")))[0] == 200
        status, _, body = await fetch(sc.port, get(b"/second"))
        assert status == 502
        assert json.loads(body)["source"] == "pdp_observe"
        assert [(r.target, r.conn) for r in up.requests] == [(b"/first", 1), (b"/second", 1), (b"/second", 2)]
        await await_stored(sc, 2)
        assert (rows(sc, 2)[1].status, rows(sc, 2)[1].failure) == (502, "upstream_reset")


async def test_post_on_reused_connection_closed_before_answer_is_not_retried(tmp_path):
    async with RawUpstream(close_on_second_request()) as up, sidecar_for(up, tmp_path) as sc:
        assert (await fetch(sc.port, get(b"/first")))[0] == 200
        status, _, body = await fetch(sc.port, get(b"/query", b"POST", b'{"q":1}'))
        assert status == 502
        err = json.loads(body)
        assert err["source"] == "pdp_observe" and err["upstream"] == up.url
        # sent once: a POST may have had its effect, so it is never repeated
        assert [(r.method, r.target, r.conn, r.body) for r in up.requests] == [
            (b"GET", b"/first", 1, b""), (b"POST", b"/query", 1, b'{"q":1}')]
        await await_stored(sc, 2)
        row = rows(sc, 2)[1]
        assert (row.method, row.status, row.failure) == ("POST", 502, "upstream_reset")


# -- 2. interim 1xx answers ----------------------------------------------------------------------

@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
])
async def test_interim_1xx_is_skipped_and_the_final_answer_relayed(tmp_path, interim):
    async def handler(up: RawUpstream, reader, writer, conn):
        for _ in range(10):
            req = await up.read(reader, conn)
            writer.write(interim)
            await writer.drain()
            await asyncio.sleep(0.02)  # the final answer in a later packet
            writer.write(ok(b"final for " + req.target, b"X-Final: yes"))
            await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        for path in (b"/one", b"/two"):
            status, head, body = await fetch(sc.port, get(path, b"POST", b"{}"))
            assert (status, body) == (200, b"final for " + path)
            assert b"\r\nX-Final: yes" in head
            assert b"Link:" not in head  # the 103's headers belong to the 103
        assert up.connections == 1  # the connection stays usable after an interim answer
        await await_stored(sc, 2)
        assert [(r.status, r.resp_bytes, r.failure) for r in rows(sc, 2)] == [(200, 14, None), (200, 14, None)]


# -- 3. close-delimited answers ------------------------------------------------------------------

@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest.mark.parametrize("size", [11, 3 * 1024 * 1024 + 5])
async def test_close_delimited_response_body_arrives_whole(tmp_path, size, version):
    payload = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    payload = payload[:size]

    async def handler(up: RawUpstream, reader, writer, conn):
        await up.read(reader, conn)
        writer.write(version + b" 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for i in range(0, size, 100_000):
            writer.write(payload[i:i + 100_000])
            await writer.drain()
        writer.close()  # the end of the body is the end of the connection
        await writer.wait_closed()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        for path in (b"/a", b"/b"):  # the second needs a new connection: the first one ended
            status, _, body = await fetch(sc.port, get(path))
            assert status == 200
            assert len(body) == size and body == payload
        assert up.connections == 2
        await await_stored(sc, 2)
        for row in rows(sc, 2):
            assert (row.status, row.resp_bytes, row.failure) == (200, size, None)
        ex = StoreReader(sc.settings.db).get(rows(sc, 1)[0].id)
        assert ex.response.body.sha256 == hashlib.sha256(payload).hexdigest()


# -- 4. the pool limit ----------------------------------------------------------------------------

async def test_pool_size_limits_concurrent_upstream_connections(tmp_path):
    async def handler(up: RawUpstream, reader, writer, conn):
        for _ in range(20):
            req = await up.read(reader, conn)
            await asyncio.sleep(0.15)
            writer.write(ok(req.target))
            await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path, upstream_pool_size=2) as sc:
        t0 = time.monotonic()
        results = await asyncio.gather(*(fetch(sc.port, get(b"/r%d" % i)) for i in range(6)))
        elapsed = time.monotonic() - t0
        assert [(s, b) for s, _, b in results] == [(200, b"/r%d" % i) for i in range(6)]
        assert up.max_open <= 2 and up.connections == 2
        assert elapsed >= 3 * 0.15 * 0.9  # six answers of 0.15 s through two connections: three rounds
        await await_stored(sc, 6)
        assert sorted((r.path, r.status, r.failure) for r in rows(sc, 6)) == [
            (f"/r{i}", 200, None) for i in range(6)]


# -- 5. malformed answers ------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 abc\r\n\r\n",
    b"\x00\x17\x03garbage that is not http\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nBad Header Name: 1\r\n\r\n",
])
async def test_malformed_upstream_answer_gives_502_and_is_recorded(tmp_path, answer):
    async def handler(up: RawUpstream, reader, writer, conn):
        await up.read(reader, conn)
        writer.write(answer)
        await writer.drain()
        await drain_until_eof(reader)  # the sidecar gives up on the connection, not us

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        t0 = time.monotonic()
        status, head, body = await fetch(sc.port, get(b"/bad"))
        assert time.monotonic() - t0 < 5  # parsed and rejected, not timed out
        assert status == 502
        assert b"content-type: application/json" in head.lower()
        err = json.loads(body)
        assert err["source"] == "pdp_observe" and err["upstream"] == up.url
        await await_stored(sc, 1)
        row = rows(sc, 1)[0]
        assert (row.status, row.failure) == (502, "upstream_error")
        assert len(up.requests) == 1  # not retried
        assert sc.proxy.pool.open_connections == 0


# -- 6. chunked uploads --------------------------------------------------------------------------

def chunk_frame(data: bytes, sizes: list[int]) -> bytes:
    out, pos, i = bytearray(), 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        i += 1
        piece = data[pos:pos + n]
        pos += n
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


@pytest.mark.parametrize("size", [0, 11, 600 * 1024 + 7])
async def test_chunked_request_body_reaches_upstream_byte_identical(tmp_path, size):
    data = (hashlib.sha256(b"up").digest() * (size // 32 + 1))[:size]

    async def handler(up: RawUpstream, reader, writer, conn):
        for _ in range(10):
            req = await up.read(reader, conn)
            writer.write(ok(json.dumps({"len": len(req.body),
                                        "sha": hashlib.sha256(req.body).hexdigest()}).encode()))
            await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        try:
            writer.write(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n")
            framed = chunk_frame(data, [1000, 70_000, 3, 150_000])
            for i in range(0, len(framed), 50_000):  # arrives in pieces, as a real upload does
                writer.write(framed[i:i + 50_000])
                await writer.drain()
            raw = await asyncio.wait_for(reader.read(), STEP)
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:300]
        got = json.loads(dechunk(body) if b"chunked" in head.lower() else body)
        assert got == {"len": size, "sha": hashlib.sha256(data).hexdigest()}

        (req,) = up.requests
        assert req.header_values(b"transfer-encoding") == [b"chunked"]  # exactly one, framed by us
        assert req.header_values(b"content-length") == []
        assert req.body == data  # read_chunked checked the framing strictly: hex sizes, CRLFs, 0-chunk
        assert req.raw_body.endswith(b"0\r\n\r\n")
        await await_stored(sc, 1)
        row = rows(sc, 1)[0]
        assert (row.status, row.req_bytes, row.failure) == (200, size, None)


async def test_chunked_upload_then_keepalive_request_on_same_upstream_connection(tmp_path):
    """The chunked body ends exactly at its 0-chunk: a following request on the same upstream
    connection parses cleanly (no stray or missing framing bytes between them)."""
    async def handler(up: RawUpstream, reader, writer, conn):
        for _ in range(10):
            req = await up.read(reader, conn)
            writer.write(ok(b"%d:%s" % (len(req.body), req.target)))
            await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        try:
            writer.write(b"POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunk_frame(b"x" * 300_000, [65536]))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readexactly(len(b"300000:/up")), STEP) == b"300000:/up"
        finally:
            writer.close()
        status, _, body = await fetch(sc.port, get(b"/after"))
        assert (status, body) == (200, b"0:/after")
        assert [(r.target, r.conn) for r in up.requests] == [(b"/up", 1), (b"/after", 1)]


# -- 7. an early answer to a large upload ---------------------------------------------------------

@pytest.mark.parametrize("client", ["keeps_sending", "stalls"])
async def test_early_413_while_request_body_streams_reaches_client(tmp_path, client):
    total = 8 * 1024 * 1024
    answer = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
              b"Connection: close\r\n\r\ntoo large")

    async def handler(up: RawUpstream, reader, writer, conn):
        req_head = await read_head(reader)
        up.requests.append(Request(req_head, b"", b"", conn))
        if req_head.startswith(b"POST /upload"):
            await asyncio.wait_for(reader.readexactly(100_000), STEP)  # some of the body arrived
            writer.write(answer)
            await writer.drain()
            writer.write_eof()  # done talking; keep reading so the answer is not lost to a reset
            await drain_until_eof(reader)
            return
        writer.write(ok(b"fine"))
        await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)

        async def send_body() -> None:
            block = b"b" * 65536
            limit = total if client == "keeps_sending" else 200_000
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < limit:
                    piece = block[: min(len(block), limit - sent)]
                    writer.write(piece)
                    await writer.drain()
                    sent += len(piece)

        sender = None
        try:
            writer.write(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % total)
            sender = asyncio.ensure_future(send_body())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
            assert head.startswith(b"HTTP/1.1 413 Payload Too Large"), head
            assert b"\r\nContent-Length: 9" in head
            assert await asyncio.wait_for(reader.readexactly(9), STEP) == b"too large"
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.wait([sender], timeout=STEP)
            writer.transport.abort()

        # the sidecar is fine: the next request is answered (on a new upstream connection)
        status, _, body = await fetch(sc.port, get(b"/next"))
        assert (status, body) == (200, b"fine")
        assert [r.conn for r in up.requests] == [1, 2]
        await await_stored(sc, 2)
        first, second = rows(sc, 2)
        assert (first.path, first.status) == ("/upload", 413)
        assert (second.path, second.status, second.failure) == ("/next", 200, None)
        assert sc.proxy.pool.open_connections <= 1


# -- 8. header bytes that are not ASCII -----------------------------------------------------------

async def test_non_ascii_response_header_bytes_reach_client_byte_identical(tmp_path):
    async def handler(up: RawUpstream, reader, writer, conn):
        await up.read(reader, conn)
        writer.write(ok(b"ok", b"X-Latin1: caf\xe9 cr\xe8me", b"X-Utf8: \xc3\xa9t\xc3\xa9",
                        b"Content-Disposition: attachment; filename=\"r\xe9sum\xe9.pdf\""))
        await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        status, head, body = await fetch(sc.port, get(b"/h"))
        assert (status, body) == (200, b"ok")
        lines = head.split(b"\r\n")
        assert b"X-Latin1: caf\xe9 cr\xe8me" in lines
        assert b"X-Utf8: \xc3\xa9t\xc3\xa9" in lines
        assert b"Content-Disposition: attachment; filename=\"r\xe9sum\xe9.pdf\"" in lines
        await await_stored(sc, 1)
        ex = StoreReader(sc.settings.db).get(rows(sc, 1)[0].id)
        assert ex.response.status == 200


async def test_non_ascii_request_header_bytes_reach_upstream_byte_identical(tmp_path):
    async def handler(up: RawUpstream, reader, writer, conn):
        await up.read(reader, conn)
        writer.write(ok(b"ok"))
        await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        status, _, _ = await fetch(sc.port, b"GET /h HTTP/1.1\r\nHost: app\r\nX-Latin1: caf\xe9\r\n"
                                            b"X-Utf8: \xc3\xa9t\xc3\xa9\r\nConnection: close\r\n\r\n")
        assert status == 200
        (req,) = up.requests
        assert req.header_values(b"x-latin1") == [b"caf\xe9"]
        assert req.header_values(b"x-utf8") == [b"\xc3\xa9t\xc3\xa9"]


# -- bytes the upstream sends that nobody asked for ----------------------------------------------

@pytest.mark.parametrize("extra", [
    b"HTTP/1.1 404 Not Found\r\nX-Second: 1\r\nContent-Length: 4\r\n\r\nnope",  # a whole second answer
    b"HTTP/1.1 2",  # the start of one
    b"junk",
])
async def test_bytes_after_a_complete_answer_are_not_given_to_anyone(tmp_path, extra):
    async def handler(up: RawUpstream, reader, writer, conn):
        for n in range(10):
            req = await up.read(reader, conn)
            if n == 0 and conn == 1:
                writer.write(ok(b"ok", b"X-First: 1") + extra)  # one write: one packet
            else:
                writer.write(ok(b"answer to " + req.target))
            await writer.drain()

    async with RawUpstream(handler) as up, sidecar_for(up, tmp_path) as sc:
        status, head, body = await fetch(sc.port, get(b"/one"))
        assert (status, body) == (200, b"ok")
        assert b"\r\nX-First: 1" in head and b"X-Second" not in head
        # a POST is never retried: it must not land on a connection with stale bytes in it
        status, _, body = await fetch(sc.port, get(b"/two", b"POST", b"{}"))
        assert (status, body) == (200, b"answer to /two")
        await await_stored(sc, 2)
        assert [(r.status, r.resp_bytes, r.failure) for r in rows(sc, 2)] == [(200, 2, None), (200, 14, None)]
