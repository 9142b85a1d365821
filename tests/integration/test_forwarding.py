"""The proxy forwards faithfully and records every exchange: real servers on loopback."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from yarl import URL

from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings
from tests.support.upstream import GZIP_BODY, GZIP_PAYLOAD
from pdp_observe.sidecar import start_sidecar


async def raw_http(port: int, request: bytes) -> bytes:
    """Send bytes exactly as given (header case/order under our control); read until close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def head_and_body(raw: bytes) -> tuple[list[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_and_query_strings_pass_untouched(sidecar, method):
    qs = "/echo?a=1&a=2&b=%2F%20x&plus=a+b&empty=&flag"
    async with aiohttp.ClientSession() as s:
        url = URL(f"http://127.0.0.1:{sidecar.port}{qs}", encoded=True)
        async with s.request(method, url, data=b'{"x":1}' if method != "GET" else None) as r:
            assert r.status == 200
            got = await r.json()
    assert got["method"] == method
    assert got["path_qs"] == qs
    await await_stored(sidecar, 1)
    row = StoreReader(sidecar.settings.db).last(1)[0]
    assert (row.method, row.path, row.status) == (method, qs, 200)


async def test_head_request_has_no_body_and_keeps_length(sidecar):
    async with aiohttp.ClientSession() as s:
        async with s.head(f"http://127.0.0.1:{sidecar.port}/sized?size=1234") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1234"
            assert await r.read() == b""


async def test_header_order_and_case_preserved_host_rewritten(sidecar):
    port = sidecar.port
    req = (b"POST /echo HTTP/1.1\r\nHost: app.internal:4466\r\nX-Zeta: 1\r\nx-alpha: 2\r\n"
           b"X-MiXeD-CaSe: 3\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
           b"Connection: close\r\n\r\n{}")
    _, body = head_and_body(await raw_http(port, req))
    headers = json.loads(body)["headers"]
    names = [k for k, _ in headers]
    assert names[:1] == ["Host"]
    assert dict(headers)["Host"] == sidecar.proxy.upstream.split("//")[1]
    # relative order and exact case of the client's own headers survive
    assert [n for n in names if n.lower().startswith("x-") and "forwarded" not in n.lower()] == ["X-Zeta", "x-alpha", "X-MiXeD-CaSe"]
    assert dict(headers)["X-Forwarded-Host"] == "app.internal:4466"
    assert dict(headers)["X-Forwarded-For"] == "127.0.0.1"
    assert dict(headers)["X-Forwarded-Proto"] == "http"
    # aiohttp must not add headers the client never sent
    assert not {"User-Agent", "Accept", "Accept-Encoding"} & set(names)


async def test_preserve_host_and_forwarded_headers_off(upstream, tmp_path):
    sc = await start_sidecar(make_settings(upstream[0], tmp_path / "c.db", preserve_host=True,
                                           forwarded_headers=False))
    try:
        _, body = head_and_body(await raw_http(sc.port, b"GET /echo HTTP/1.1\r\nHost: app.internal\r\nConnection: close\r\n\r\n"))
        headers = dict(json.loads(body)["headers"])
        assert headers["Host"] == "app.internal"
        assert not any(k.lower().startswith("x-forwarded") for k in headers)
    finally:
        await sc.stop()


async def test_hop_by_hop_headers_stripped_both_ways(sidecar):
    req = (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret-Hop\r\nKeep-Alive: timeout=5\r\n"
           b"X-Secret-Hop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"
           b"Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n")
    _, body = head_and_body(await raw_http(sidecar.port, req))
    sent = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert "x-kept" in sent
    for h in ("keep-alive", "x-secret-hop", "te", "upgrade", "proxy-authorization", "proxy-connection"):
        assert h not in sent, h

    raw = await raw_http(sidecar.port, b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _ = head_and_body(raw)
    names = {h.split(":")[0].lower() for h in head[1:]}
    assert "x-kept" in names
    for h in ("keep-alive", "x-private", "proxy-authenticate", "trailer"):
        assert h not in names, h


async def test_gzip_passes_byte_identical_and_is_stored_decoded(sidecar):
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(f"http://127.0.0.1:{sidecar.port}/gzip", headers={"Accept-Encoding": "gzip"}) as r:
            raw = await r.read()
            assert r.headers["Content-Encoding"] == "gzip"
    assert raw == GZIP_BODY
    await await_stored(sidecar, 1)
    reader = StoreReader(sidecar.settings.db)
    ex = reader.get(reader.last(1)[0].id)
    assert ex.response.body.data == GZIP_PAYLOAD
    assert ex.response.body.size == len(GZIP_BODY)
    assert ex.response.body.encoding == "gzip"


async def test_chunked_response_streams_through(sidecar):
    size = 3 * 1024 * 1024 + 17
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{sidecar.port}/big?size={size}") as r:
            assert r.headers.get("Transfer-Encoding") == "chunked"
            data = await r.read()
    assert len(data) == size
    await await_stored(sidecar, 1)
    row = StoreReader(sidecar.settings.db).last(1)[0]
    assert row.resp_bytes == size and row.truncated  # 1 MiB capture limit


async def test_keepalive_reuses_one_upstream_connection(sidecar, upstream):
    _, state = upstream
    async with aiohttp.ClientSession() as s:
        for _ in range(20):
            async with s.get(f"http://127.0.0.1:{sidecar.port}/peer") as r:
                await r.read()
    assert len(state.peers) == 1


async def test_slow_upstream_is_waited_for(sidecar):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{sidecar.port}/slow?delay=1.2") as r:
            assert (await r.json()) == {"slept": 1.2}
    await await_stored(sidecar, 1)
    assert StoreReader(sidecar.settings.db).last(1)[0].duration_ms >= 1200


async def test_upstream_refused_gives_502_json_and_is_recorded(tmp_path):
    from tests.conftest import free_port

    sc = await start_sidecar(make_settings(f"http://127.0.0.1:{free_port()}", tmp_path / "c.db"))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{sc.port}/query", data=b"{}") as r:
                assert r.status == 502
                body = await r.json()
        assert body["source"] == "pdp_observe" and body["upstream"] == sc.proxy.upstream
        assert "refused" in body["error"]
        await await_stored(sc, 1)
        row = StoreReader(sc.settings.db).last(1)[0]
        assert (row.status, row.failure) == (502, "upstream_refused")
    finally:
        await sc.stop()


async def test_upstream_reset_before_answer_gives_502(sidecar):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{sidecar.port}/reset") as r:
            assert r.status == 502
            assert (await r.json())["source"] == "pdp_observe"
    await await_stored(sidecar, 1)
    assert StoreReader(sidecar.settings.db).last(1)[0].failure == "upstream_reset"


async def test_upstream_read_timeout_gives_504(upstream, tmp_path):
    sc = await start_sidecar(make_settings(upstream[0], tmp_path / "c.db", read_timeout=0.5))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{sc.port}/hang") as r:
                assert r.status == 504
                assert "timed out" in (await r.json())["error"]
        await await_stored(sc, 1)
        assert StoreReader(sc.settings.db).last(1)[0].failure == "upstream_read_timeout"
    finally:
        await sc.stop()


async def test_upstream_connect_timeout_gives_504(tmp_path):
    # A listener whose accept queue is full makes the kernel drop SYNs: connect() hangs.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    await asyncio.sleep(0.2)
    sc = await start_sidecar(make_settings(f"http://127.0.0.1:{port}", tmp_path / "c.db", connect_timeout=0.5))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{sc.port}/x", timeout=aiohttp.ClientTimeout(total=20)) as r:
                assert r.status == 504
        await await_stored(sc, 1)
        assert StoreReader(sc.settings.db).last(1)[0].failure == "upstream_connect_timeout"
    finally:
        await sc.stop()
        for f in fillers:
            f.close()
        lsock.close()


async def test_upstream_reset_mid_response_cuts_the_client_and_is_recorded(sidecar):
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(f"http://127.0.0.1:{sidecar.port}/reset-mid") as r:
                assert r.status == 200
                await r.read()
    await await_stored(sidecar, 1)
    row = StoreReader(sidecar.settings.db).last(1)[0]
    assert row.failure == "upstream_reset"
    assert 0 < row.resp_bytes < 1_000_000


async def test_client_abort_mid_request_cancels_upstream_and_is_recorded(sidecar, upstream):
    _, state = upstream
    _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"POST /events?delay=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 70000)
    await writer.drain()
    for _ in range(100):
        if state.seen:
            break
        await asyncio.sleep(0.02)
    writer.transport.abort()
    await await_stored(sidecar, 1)
    row = StoreReader(sidecar.settings.db).last(1)[0]
    assert row.failure == "client_abort"
    for _ in range(100):
        if state.cancelled:
            break
        await asyncio.sleep(0.02)
    assert state.cancelled == ["/events?delay=5"]


async def test_upload_answered_early_records_what_was_forwarded(upstream):
    """The upstream answers 413 while the client is still streaming a chunked upload: the
    capture handed to the recorder already says what was forwarded (it used to be filled in
    by the upload's own end, which comes after the hand-off, or never)."""
    from pdp_observe.proxy import Proxy, serve

    class AtSubmit:  # what the recorder receives, read at the moment it is handed over
        def __init__(self) -> None:
            self.seen: list[tuple[int | None, int, int]] = []

        def submit(self, raw) -> None:  # noqa: ANN001
            self.seen.append((raw.status, raw.req_size, len(raw.req_body)))

    sink = AtSubmit()
    proxy = Proxy(upstream[0], sink)
    srv, server = await serve(proxy, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunk = b"b" * 40000
        writer.write(b"POST /early?read=1000 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413")
        for _ in range(100):
            if sink.seen:
                break
            await asyncio.sleep(0.02)
        writer.transport.abort()
    finally:
        srv.close()
        await server.shutdown(1)
        await proxy.close()
    (status, size, kept), = sink.seen
    assert status == 413 and size >= 1000 and kept == size  # at least what the upstream read


async def test_client_abort_mid_response_is_recorded(sidecar):
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"GET /big?size=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.readexactly(500_000)
    writer.transport.abort()
    await await_stored(sidecar, 1, timeout=20)
    row = StoreReader(sidecar.settings.db).last(1)[0]
    assert row.failure == "client_abort"
    assert row.resp_bytes < 200_000_000


async def test_500_parallel_requests_each_recorded_exactly_once(sidecar):
    n = 500
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one(i: int) -> int:
            async with s.post(f"http://127.0.0.1:{sidecar.port}/echo?i={i}", data=json.dumps({"i": i})) as r:
                assert (await r.json())["path_qs"] == f"/echo?i={i}"
                return r.status
        statuses = await asyncio.gather(*(one(i) for i in range(n)))
    assert statuses == [200] * n
    await await_stored(sidecar, n)
    rows = list(StoreReader(sidecar.settings.db).iter_all())
    assert sorted(r.path for r in rows) == sorted(f"/echo?i={i}" for i in range(n))
    assert sidecar.recorder.dropped() == {}
