"""The hot path: forward every request untouched, timestamp it, tee a capped body prefix.

Built on aiohttp's low-level server (no router, no middleware) and a lean pooled client
(:mod:`pdp_observe.upstream`). Per request it does only what forwarding needs plus
perf_counter() readings and byte-slice references; everything else happens in the recorder.

Faithfulness (RFC 9110 §7.6.1): hop-by-hop headers are dropped both ways; all others pass in
order with their case and their exact bytes; Content-Encoding passes as is (nothing is
decompressed on the path); aiohttp's own defaults (Server, Date, Content-Type) are suppressed
when the upstream did not send them, so the client cannot tell the sidecar is there.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import time
from typing import Any, AsyncIterator, Protocol

from aiohttp import hdrs, web
from yarl import URL

from .capture import BodyTee, RawCapture, keep_whole
from .engine.telemetry import GEN_ENGINE, GEN_QPE, client_ask, merged_header, strip_extensions
from .exchange import Failure
from .tracecontext import format_traceparent, start_span
from .upstream import (UpstreamConnectError, UpstreamConnectTimeout, UpstreamDisconnected, UpstreamPool,
                       UpstreamProtocolError, UpstreamReadTimeout, UpstreamResponse)


class CaptureSink(Protocol):
    """Where the hot path hands each finished capture (the in-process Recorder or the link)."""

    def submit(self, raw: RawCapture) -> None: ...

log = logging.getLogger("pdp_observe.proxy")

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
# Bodies up to this size are read whole (one write each way); larger ones are streamed.
WHOLE_BODY_MAX = 256 * 1024
STREAM_CHUNK = 64 * 1024
_AIOHTTP_DEFAULTS = ((b"server", hdrs.SERVER), (b"date", hdrs.DATE), (b"content-type", hdrs.CONTENT_TYPE))
_perf = time.perf_counter
_wall = time.time
_ENC = ("utf-8", "surrogateescape")  # how aiohttp decoded the request line and headers: undone exactly
_FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses to write


class _PassthroughResponse(web.StreamResponse):
    """StreamResponse that does not invent Server/Date/Content-Type the upstream did not send."""

    __slots__ = ("_upstream_sent",)

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], sent: set[bytes],
                 *, buffer_headers: bool) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self._upstream_sent = sent
        if buffer_headers:
            self._send_headers_immediately = False  # head + small body in one write

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        h = self._headers
        for lname, name in _AIOHTTP_DEFAULTS:
            if lname not in self._upstream_sent and name in h:
                del h[name]

    async def _write_headers(self) -> None:
        # aiohttp serialises header text as UTF-8 and its C writer silently drops lone
        # surrogates, which is what upstream bytes that are not UTF-8 (a latin-1 0xE9) decode
        # to: such a head is serialised here, byte for byte; an all-ASCII one stays aiohttp's.
        h = self._headers
        text = self._reason + "".join(h.values())
        if text.isascii():
            await super()._write_headers()
            return
        if _FORBIDDEN_HEADER_CHARS.search(text) is not None or _FORBIDDEN_HEADER_CHARS.search("".join(h)):
            raise ValueError("Forbidden control character detected in headers.")
        request, writer = self._req, self._payload_writer
        assert request is not None and writer is not None
        v = request.version
        parts = [b"HTTP/%d.%d %d " % (v[0], v[1], self._status), self._reason.encode(*_ENC), b"\r\n"]
        for k, val in h.items():
            parts += (k.encode(*_ENC), b": ", val.encode(*_ENC), b"\r\n")
        parts.append(b"\r\n")
        await writer.write_headers("", {})  # writer state and hooks as aiohttp sets them...
        writer._headers_buf = b"".join(parts)  # type: ignore[attr-defined]  # ...with our bytes
        if self._send_headers_immediately:
            writer.send_headers()


def _conn_tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip().lower() for t in value.split(b","))


_NO_DROP: frozenset[bytes] = frozenset()
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


def filter_headers(items: Any, drop: frozenset[bytes] = _NO_DROP,
                   names: set[bytes] | None = None) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers (and those the Connection header names) and ``drop`` from raw
    ``(bytes, bytes)`` pairs; keep order, case and bytes. One pass; when ``names`` is given,
    the kept lower-cased names are added to it (the response side uses them to suppress
    aiohttp's defaults).
    """
    named: frozenset[bytes] = _NO_DROP
    out: list[tuple[bytes, bytes]] = []
    for k, v in items:
        lk = k.lower()
        if lk in HOP_BY_HOP or lk in drop or lk.startswith(b"proxy-"):
            if lk == b"connection":
                named = named | _conn_tokens(v)
            continue
        out.append((k, v))
        if names is not None:
            names.add(lk)
    if named:
        out = [(k, v) for k, v in out if k.lower() not in named]
        if names is not None:
            names -= named
    return out


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_ENDPOINT_RE = re.compile(rb'("data-proxy"\s*:\s*\{\s*"endpoint"\s*:\s*")(https?://[^/"]+)')


def _origin_parts(origin: str) -> tuple[str, str, int]:
    u = URL(origin)
    return u.scheme, (u.host or "").lower(), u.port or (443 if u.scheme == "https" else 80)


def same_origin(a: str, b: str) -> bool:
    """Origins equal, counting localhost/127.0.0.1/::1 as one host (servers name themselves freely)."""
    sa, ha, pa = _origin_parts(a)
    sb, hb, pb = _origin_parts(b)
    return sa == sb and pa == pb and (ha == hb or (ha in _LOOPBACK_NAMES and hb in _LOOPBACK_NAMES))


def rewrite_itx_endpoint(body: bytes, upstream_origin: str, client_origin: str) -> bytes | None:
    """Point a Data Proxy itx endpoint that names the upstream back at the sidecar.

    A Data Proxy answers ``transaction/start`` with ``"data-proxy": {"endpoint": URL}`` and the
    client sends the transaction's queries, commit and rollback to that URL, not to the base
    URL. If it names the upstream, the transaction would bypass the sidecar; so the origin is
    swapped for the one the client used to reach the sidecar. Endpoints naming another host
    (a specific node behind a balancer) are left alone. Returns None when nothing changed.
    """
    m = _ENDPOINT_RE.search(body)
    if m is None:
        return None
    origin = m.group(2).decode("latin-1")
    try:
        if not same_origin(origin, upstream_origin) or same_origin(origin, client_origin):
            return None
    except ValueError:
        return None
    return body[: m.start(2)] + client_origin.encode("latin-1") + body[m.end(2):]


UPSTREAM_KINDS = ("auto", "engine", "dataproxy", "qpe")
_TXN_IN_PATH = re.compile(r"/(?:transaction|itx)/(?!start\b)([^/?]+)/")
# Responses up to this size are buffered to remove telemetry the client did not ask for;
# past it (rare: a query result this large) they stream as sent and the exchange says so.
TELEMETRY_EDIT_MAX = 16 * 1024**2


def telemetry_generation(method: str, path: str, kind: str) -> str | None:
    """Which capture-header dialect a request speaks, from its route (None: not a query route).

    ``/transaction/start|<id>/commit|rollback`` exist on both the engine and the Prisma 7
    executor, so they take the upstream's kind — configured, or learnt from the first
    unambiguous route (``POST /`` is the engine, ``POST /query`` the executor).
    """
    if method != "POST":
        return None
    if path == "/":
        return GEN_ENGINE
    if path == "/query" or (path.startswith("/transaction/") and path.endswith("/query")):
        return GEN_QPE
    if path.endswith("/graphql") or "/itx/" in path:
        return GEN_ENGINE  # Data Proxy: the header is handed to its engine
    if path.startswith("/transaction/"):
        return {"engine": GEN_ENGINE, "qpe": GEN_QPE, "dataproxy": GEN_ENGINE}.get(kind)
    if path.endswith("/transaction/start"):  # /<version>/<hash>/transaction/start
        return GEN_ENGINE
    return None


def error_response(status: int, message: str, upstream: str) -> web.Response:
    body = json.dumps({"error": message, "upstream": upstream, "source": "pdp_observe"})
    return web.Response(status=status, text=body, content_type="application/json")


def classify_upstream_error(exc: BaseException) -> tuple[str, int, str]:
    """(failure kind, HTTP status for the client, message) for an upstream failure."""
    if isinstance(exc, UpstreamConnectTimeout):
        return Failure.UPSTREAM_CONNECT_TIMEOUT, 504, "timed out connecting to the upstream"
    if isinstance(exc, (UpstreamReadTimeout, asyncio.TimeoutError, TimeoutError)):
        return Failure.UPSTREAM_READ_TIMEOUT, 504, "timed out waiting for the upstream to answer"
    if isinstance(exc, UpstreamConnectError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return Failure.UPSTREAM_REFUSED, 502, "upstream refused the connection"
        return Failure.UPSTREAM_ERROR, 502, f"cannot connect to the upstream: {exc.os_error}"
    if isinstance(exc, (UpstreamDisconnected, ConnectionError)):
        return Failure.UPSTREAM_RESET, 502, "upstream closed the connection before answering"
    if isinstance(exc, UpstreamProtocolError):
        return Failure.UPSTREAM_ERROR, 502, str(exc)
    return Failure.UPSTREAM_ERROR, 502, f"upstream error: {type(exc).__name__}: {exc}"


class Proxy:
    """One listening proxy: ``handle`` is the aiohttp low-level request handler."""

    def __init__(self, upstream: str, recorder: CaptureSink, *, body_limit: int = 1024**2,
                 preserve_host: bool = False, forwarded_headers: bool = True,
                 connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 pool_size: int = 100, rewrite_itx_endpoint: bool = True,
                 capture_telemetry: bool = False, upstream_kind: str = "auto",
                 propagate_trace: bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.capture_telemetry = capture_telemetry
        self.upstream_kind = upstream_kind
        self.propagate_trace = propagate_trace
        self._plans: dict[tuple[str, str | None], tuple[str | None, Any]] = {}
        # requests being forwarded now (pressure snapshots name them) and the most at once
        self.active: dict[int, RawCapture] = {}
        self.high_water = 0
        self.rewrite_itx_endpoint = rewrite_itx_endpoint
        # names never forwarded upstream besides hop-by-hop ones: our own X-Forwarded-* replace
        # the client's (their values are folded in), and Host is the upstream's unless preserved
        self._drop = frozenset((_FORWARDED if forwarded_headers else set())
                               | (set() if preserve_host else {b"host"}))
        self.recorder = recorder
        self.body_limit = body_limit
        self.preserve_host = preserve_host
        self.forwarded_headers = forwarded_headers
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self.pool: UpstreamPool | None = None
        self._host_line = b""
        self._prefix = b""
        self.in_flight = 0

    async def start(self) -> None:
        self.pool = pool = UpstreamPool(self.upstream, limit=self.pool_size,
                                        connect_timeout=self.connect_timeout,
                                        read_timeout=self.read_timeout, keepalive=30.0)
        self._host_line = b"Host: " + pool.host_header.encode("idna") + b"\r\n"
        self._prefix = pool.path_prefix.encode("latin-1")

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def in_flight_list(self, limit: int = 500) -> list[dict[str, Any]]:
        """Requests being forwarded now (for pressure snapshots): arrival, method, path, txn.

        Paths are as sent (the recorder redacts them); the transaction is read from the path
        (executor, Data Proxy) or the engine's X-transaction-id header.
        """
        out = []
        for cap in list(self.active.values())[:limit]:
            m = _TXN_IN_PATH.search(cap.path)
            txn = m.group(1) if m else None
            if txn is None:
                for k, v in cap.req_headers:
                    if k.lower() == b"x-transaction-id":
                        txn = v.decode("latin-1")
                        break
            out.append({"received": cap.wall, "method": cap.method, "path": cap.path, "txn": txn})
        return out

    def _plan(self, gen: str, client_value: str | None) -> tuple[str | None, Any]:
        """(header to send or None, what the client asked), cached: clients send few variants."""
        key = (gen, client_value)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 256:
                self._plans.clear()
            plan = self._plans[key] = (merged_header(client_value, gen), client_ask(client_value, gen))
        return plan

    def _request_head(self, request: web.BaseRequest, peer: str | None, cap: RawCapture,
                      chunked: bool) -> bytes:
        """The request line and headers sent upstream, as bytes ready for the socket."""
        h = request.headers
        headers = filter_headers(request.raw_headers, self._drop)
        if self.propagate_trace:
            cap.trace = trace = start_span(h.get("traceparent"))
            _set_header(headers, b"traceparent", format_traceparent(trace[0], trace[1], trace[3]).encode())
        if self.capture_telemetry:
            path = cap.path.partition("?")[0]
            if self.upstream_kind == "auto" and cap.method == "POST":
                if path == "/":
                    self.upstream_kind = "engine"
                elif path == "/query":
                    self.upstream_kind = "qpe"
            gen = telemetry_generation(cap.method, path, self.upstream_kind)
            if gen is not None:
                client_value = h.get("X-Capture-Telemetry")
                send, _ = self._plan(gen, client_value)
                if send is not None:
                    _set_header(headers, b"X-Capture-Telemetry" if gen == GEN_QPE else b"X-capture-telemetry",
                                send.encode(*_ENC))
                    cap.tel = (gen, client_value, send, None)
        if self.forwarded_headers:
            prior = h.get("X-Forwarded-For")
            headers.append((b"X-Forwarded-For", (f"{prior}, {peer}" if prior else (peer or "")).encode(*_ENC)))
            headers.append((b"X-Forwarded-Proto", (h.get("X-Forwarded-Proto") or request.scheme).encode(*_ENC)))
            if host := (h.get("X-Forwarded-Host") or h.get("Host")):
                headers.append((b"X-Forwarded-Host", host.encode(*_ENC)))
        if chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        parts = [request.method.encode(), b" ", self._prefix, request.raw_path.encode(*_ENC), b" HTTP/1.1\r\n"]
        if not self.preserve_host:
            parts.append(self._host_line)
        for k, v in headers:
            parts += (k, b": ", v, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        t0 = _perf()
        v = request.version
        peer = request.remote
        cap = RawCapture(_wall(), t0, request.method, request.raw_path, f"{v.major}.{v.minor}",
                         peer, self.upstream, request.raw_headers)
        self.in_flight = n = self.in_flight + 1
        cap.inflight = n
        if n > self.high_water:
            self.high_water = n
        self.active[id(cap)] = cap
        try:
            return await self._forward(request, cap, peer)
        except asyncio.CancelledError:
            if cap.failure is None:
                cap.failure = Failure.CLIENT_ABORT
                cap.failure_detail = "client closed the connection"
            raise
        finally:
            self.in_flight -= 1
            del self.active[id(cap)]
            if cap.t_done is None:
                cap.t_done = _perf()
            self.recorder.submit(cap)

    async def _forward(self, request: web.BaseRequest, cap: RawCapture, peer: str | None) -> web.StreamResponse:
        pool = self.pool
        assert pool is not None
        data: bytes | None = None
        stream: AsyncIterator[bytes] | None = None
        tee: BodyTee | None = None
        clen = request.content_length
        if clen is not None and clen <= WHOLE_BODY_MAX:
            if clen:
                data = await request.read()
                cap.req_body, cap.req_size, cap.req_sha256, cap.req_truncated = keep_whole(data, self.body_limit)
        elif request.body_exists:
            stream = self._tee_request(request, tee := BodyTee(self.body_limit))
        chunked = stream is not None and clen is None
        try:
            try:
                resp = await pool.request(request.method, self._request_head(request, peer, cap, chunked),
                                          data, stream, chunked=chunked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every upstream failure becomes a clean 502/504
                kind, status, message = classify_upstream_error(exc)
                cap.failure, cap.failure_detail = kind, f"{message} ({type(exc).__name__}: {exc})"
                err = error_response(status, message, self.upstream)
                cap.status, cap.reason = status, err.reason
                cap.resp_headers = [(k, v) for k, v in err.headers.items()]
                cap.resp_body = err.body  # type: ignore[assignment]
                cap.resp_size = len(cap.resp_body)
                cap.t_first_byte = _perf()
                return err
            cap.t_connected = resp.connected_at
            cap.t_first_byte = _perf()
            try:
                return await self._relay(request, resp, cap)
            finally:
                resp.release()
        finally:
            if tee is not None:
                # what was forwarded so far, also when the upstream answered (or failed, or the
                # client left) before the upload ended: the capture is submitted right after
                # this, while the stream's own end may come later or never
                cap.req_body, cap.req_size, cap.req_sha256, cap.req_truncated = tee.result()

    @staticmethod
    async def _tee_request(request: web.BaseRequest, tee: BodyTee) -> AsyncIterator[bytes]:
        """Stream the request body upstream while ``tee`` keeps a capped prefix, size and sha256."""
        async for chunk in request.content.iter_chunked(STREAM_CHUNK):
            tee.feed(chunk)
            yield chunk

    async def _relay(self, request: web.BaseRequest, resp: UpstreamResponse,
                     cap: RawCapture) -> web.StreamResponse:
        cap.status, cap.reason, cap.resp_headers = resp.status, resp.reason, resp.raw_headers
        sent: set[bytes] = set()
        headers = [(k.decode(*_ENC), v.decode(*_ENC)) for k, v in filter_headers(resp.raw_headers, names=sent)]
        clen = resp.content_length
        whole = clen is not None and clen <= WHOLE_BODY_MAX
        tel = cap.tel
        if tel is not None and not whole and (clen is None or clen <= TELEMETRY_EDIT_MAX):
            whole = True  # the answer carries telemetry the client did not ask for: edit it
        if not whole and self.rewrite_itx_endpoint and request.method == "POST" and resp.status == 200 \
                and request.path.endswith("/transaction/start"):
            whole = True  # a tiny JSON answer we may need to edit (see rewrite_itx_endpoint)
        out = _PassthroughResponse(resp.status, resp.reason, headers, sent, buffer_headers=whole)
        if clen is not None:
            out.content_length = clen
        if whole or request.method == "HEAD" or resp.status in (204, 304):
            body = await self._read_whole(resp, cap)
            if tel is not None:
                body = self._strip_telemetry(body, resp, cap, tel)
                out.content_length = len(body)
            if b'"data-proxy"' in body and (new := self._rewrite_itx(request, body)) is not None:
                body = cap.resp_body = new
                out.content_length = len(new)
            elif clen is None and whole:
                out.content_length = len(body)
            try:
                await out.prepare(request)
                await out.write_eof(body)
            except ConnectionError as exc:  # the client went away: recorded, not logged as an error
                cap.failure, cap.failure_detail = Failure.CLIENT_ABORT, f"client went away: {exc!r}"
            cap.t_done = _perf()
            return out
        if tel is not None:
            cap.tel = (tel[0], tel[1], tel[2], -1)  # too large to edit: passed on as sent
        await out.prepare(request)
        try:
            await self._stream_response(resp, out, cap)
        except Exception:  # noqa: BLE001 - recorded in cap; the client must see a cut, not a clean end
            if request.transport is not None:
                request.transport.abort()
            cap.t_done = _perf()
            return out
        await out.write_eof()
        cap.t_done = _perf()
        return out

    def _strip_telemetry(self, body: bytes, resp: UpstreamResponse, cap: RawCapture,
                         tel: tuple[str, str | None, str, int | None]) -> bytes:
        """The body the client would have had without the sidecar's capture tokens."""
        if (resp.header(b"content-encoding") or "identity").lower() != "identity":
            cap.tel = (tel[0], tel[1], tel[2], -1)  # compressed: passed on as sent (recorded)
            return body
        new = strip_extensions(body, self._plan(tel[0], tel[1])[1], tel[0])
        if new is None:
            cap.tel = (tel[0], tel[1], tel[2], 0)
            return body
        cap.tel = (tel[0], tel[1], tel[2], len(body) - len(new))
        return new

    def _rewrite_itx(self, request: web.BaseRequest, body: bytes) -> bytes | None:
        if not self.rewrite_itx_endpoint or request.method != "POST" or not request.path.endswith("/transaction/start"):
            return None
        return rewrite_itx_endpoint(body, self.upstream, f"{request.scheme}://{request.host}")

    async def _read_whole(self, resp: UpstreamResponse, cap: RawCapture) -> bytes:
        try:
            body = await resp.read()
        except Exception as exc:  # noqa: BLE001
            cap.failure, cap.failure_detail = Failure.UPSTREAM_RESET, f"upstream body failed: {exc!r}"
            raise
        cap.resp_body, cap.resp_size, cap.resp_sha256, cap.resp_truncated = keep_whole(body, self.body_limit)
        return body

    async def _stream_response(self, resp: UpstreamResponse, out: web.StreamResponse,
                               cap: RawCapture) -> None:
        tee = BodyTee(self.body_limit)
        try:
            while True:
                try:
                    chunk = await resp.readany()
                except Exception as exc:  # noqa: BLE001 - upstream died mid-body
                    cap.failure = Failure.UPSTREAM_RESET
                    cap.failure_detail = f"upstream closed mid-response after {tee.size} bytes: {exc!r}"
                    raise
                if not chunk:
                    break
                tee.feed(chunk)
                try:
                    await out.write(chunk)
                except ConnectionError as exc:
                    cap.failure = Failure.CLIENT_ABORT
                    cap.failure_detail = f"client went away mid-response after {tee.size} bytes: {exc!r}"
                    raise
        finally:
            cap.resp_body, cap.resp_size, cap.resp_sha256, cap.resp_truncated = tee.result()


def _set_header(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """Replace the first header of that name in place (keeping the sender's spelling), or add it."""
    lname = name.lower()
    for i, (k, _) in enumerate(headers):
        if k.lower() == lname:
            headers[i] = (k, value)
            for j in range(len(headers) - 1, i, -1):  # duplicates would be merged upstream
                if headers[j][0].lower() == lname:
                    del headers[j]
            return
    headers.append((name, value))


async def serve(proxy: Proxy, host: str, port: int) -> tuple[asyncio.AbstractServer, web.Server]:
    """Start listening; returns the asyncio server (for its port) and the aiohttp Server."""
    await proxy.start()
    server = web.Server(proxy.handle, handler_cancellation=True,
                        max_line_size=65536, max_field_size=65536, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, host, port, reuse_address=True, backlog=1024)
    return srv, server


