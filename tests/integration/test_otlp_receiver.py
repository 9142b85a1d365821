"""The OTLP/HTTP receiver with real clients: the OTel SDK's own exporter, raw sockets, aiohttp.

Every server listens on 127.0.0.1 with an ephemeral port. The SDK exporter is synchronous
(``requests``), so it runs in a thread while the receiver serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pdp_observe.engine.otlp import OtlpForwarder, OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.timeout(60)

PB = "application/x-protobuf"
JS = "application/json"
SMALL = 64 * 1024


class Sink:
    """on_spans that keeps every batch and can be awaited."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[ReceivedSpan]] = []
        self.fail = fail

    def __call__(self, spans: list[ReceivedSpan]) -> None:
        self.batches.append(spans)
        if self.fail:
            raise RuntimeError("consumer bug")

    @property
    def spans(self) -> list[ReceivedSpan]:
        return [s for b in self.batches for s in b]

    async def wait(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while len(self.spans) < n:
            assert time.monotonic() < deadline, f"only {len(self.spans)} of {n} spans arrived"
            await asyncio.sleep(0.01)
        return self.spans


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app with a receiver on 127.0.0.1:<ephemeral>; everything is cleaned up after."""
    runners: list[web.AppRunner] = []

    async def start(receiver: OtlpReceiver, *, forwarder: OtlpForwarder | None = None,
                    middlewares: tuple = (), **runner_kwargs: Any) -> int:
        app = web.Application(middlewares=list(middlewares))
        app.add_routes(receiver.routes())
        if forwarder is not None:
            app.cleanup_ctx.append(forwarder.lifespan)
        runner = web.AppRunner(app, **runner_kwargs)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def sdk_trace(port: int, compression: Compression = Compression.NoCompression) -> list[ReadableSpan]:
    """A parent/child trace through the real OTLP/HTTP exporter; returns the SDK's own spans."""
    provider = TracerProvider(resource=Resource.create({"service.name": "pdp-test-app"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=compression, timeout=5)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("pdp.test", "1.0")
    with tracer.start_as_current_span("prisma:client:operation", kind=SpanKind.CLIENT,
                                      attributes={"model": "User", "method": "findMany", "retries": 2,
                                                  "ratio": 0.5, "cached": False, "tags": ["a", "b"]}) as parent:
        with tracer.start_as_current_span("prisma:engine:db_query", attributes={"db.query.text": "SELECT 1"}) as child:
            child.set_status(StatusCode.ERROR, "boom")
        parent.set_status(StatusCode.OK)
    provider.shutdown()
    return list(memory.get_finished_spans())


def check_same(received: list[ReceivedSpan], sdk: list[ReadableSpan]) -> None:
    by_id = {s.span_id: s for s in received}
    assert len(by_id) == len(sdk) == 2
    for s in sdk:
        r = by_id[format(s.context.span_id, "016x")]
        assert r.trace_id == format(s.context.trace_id, "032x")
        assert r.parent_span_id == (format(s.parent.span_id, "016x") if s.parent else None)
        assert r.name == s.name
        assert (r.start, r.end) == (s.start_time / 1e9, s.end_time / 1e9)
        assert r.attributes == {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()}
        assert r.service_name == "pdp-test-app" and r.scope == "pdp.test"
    parent, child = by_id[format(sdk[1].context.span_id, "016x")], by_id[format(sdk[0].context.span_id, "016x")]
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id
    assert (parent.kind, parent.status, child.kind, child.status) == ("client", "ok", "internal", "error")


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_real_sdk_exporter(serve, compression, auto_decompress):
    sink = Sink()
    receiver = OtlpReceiver(sink)
    port = await serve(receiver, auto_decompress=auto_decompress)
    sdk = await asyncio.to_thread(sdk_trace, port, compression)
    check_same(await sink.wait(2), sdk)
    assert receiver.stats["requests"] == 2 and receiver.stats["spans"] == 2  # SimpleSpanProcessor: one per span
    assert sum(receiver.stats["rejected"].values()) == 0


def json_doc(trace_id: str = "5b8efff798038103d269b633813fc60c") -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                               "scopeSpans": [{"scope": {"name": "s"}, "spans": [{
                                   "traceId": trace_id, "spanId": "eee19b7ec3c1b174", "name": "q", "kind": 2,
                                   "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
                                   "attributes": [{"key": "n", "value": {"intValue": "3"}}]}]}]}]}


async def test_json_post(serve):
    sink = Sink()
    port = await serve(OtlpReceiver(sink))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=json.dumps(json_doc()), headers={"Content-Type": JS}) as r:
            assert r.status == 200 and r.content_type == JS
            assert await r.json() == {}
        gz = gzip.compress(json.dumps(json_doc("0af7651916cd43dd8448eb211c80319c")).encode())
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=gz,
                          headers={"Content-Type": JS, "Content-Encoding": "gzip"}) as r:
            assert r.status == 200
    assert [(x.trace_id, x.name, x.kind, x.attributes, x.start, x.service_name) for x in sink.spans] == [
        ("5b8efff798038103d269b633813fc60c", "q", "server", {"n": 3}, 1_700_000_000.0, "js"),
        ("0af7651916cd43dd8448eb211c80319c", "q", "server", {"n": 3}, 1_700_000_000.0, "js"),
    ]


async def test_partial_success_for_invalid_ids(serve):
    sink = Sink()
    receiver = OtlpReceiver(sink)
    port = await serve(receiver)
    doc = json_doc()
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "traceId": "00000000000000000000000000000000"})
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=json.dumps(doc), headers={"Content-Type": JS}) as r:
            assert r.status == 200
            body = await r.json()
    assert body["partialSuccess"]["rejectedSpans"] == "1" and body["partialSuccess"]["errorMessage"]
    assert len(sink.spans) == 1 and receiver.stats["invalid_spans"] == 1


async def raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, dict[str, str], bytes, float]:
    """Send a head and some body bytes, never the rest; read the answer. Returns (status, headers, body, secs)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(head)
    for part in body_parts:
        writer.write(part)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    headers: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    elapsed = time.monotonic() - t0
    writer.close()
    return int(status_line.split()[1]), headers, body, elapsed


async def assert_still_serving(port: int) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=json.dumps(json_doc()), headers={"Content-Type": JS}) as r:
            assert r.status == 200


async def test_413_on_declared_length_without_reading_the_body(serve):
    receiver = OtlpReceiver(Sink(), max_bytes=SMALL)
    port = await serve(receiver)
    head = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 104857600\r\n\r\n")
    status, headers, body, secs = await raw_exchange(port, head, [b"\x0a" * 1000])  # 100 MiB announced, 1 kB sent
    assert status == 413 and secs < 2 and headers["connection"] == "close"
    assert headers["content-type"] == PB and Status.FromString(body).message
    # with Expect: 100-continue the client is told before it sends anything
    status, _, body, _ = await raw_exchange(port, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"), [])
    assert status == 413
    # an ordinary client sending the whole thing
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=b"\x0a" * (SMALL + 1), headers={"Content-Type": PB}) as r:
            assert r.status == 413
    assert receiver.stats["rejected"]["too_large"] == 3
    await assert_still_serving(port)


async def test_413_on_chunked_body_while_reading(serve):
    receiver = OtlpReceiver(Sink(), max_bytes=SMALL)
    port = await serve(receiver)
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"4000\r\n" + b" " * 0x4000 + b"\r\n"
    status, _, body, secs = await raw_exchange(port, head, [chunk] * 5)  # 80 KiB and no final chunk: never ends
    assert status == 413 and secs < 2 and json.loads(body)["message"]

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 16384

    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=endless(), headers={"Content-Type": JS}) as r:
            assert r.status == 413
    assert receiver.stats["rejected"]["too_large"] == 2
    await assert_still_serving(port)


async def test_413_on_gzip_that_inflates_past_the_limit(serve):
    for auto in (True, False):
        receiver = OtlpReceiver(Sink(), max_bytes=SMALL)
        port = await serve(receiver, auto_decompress=auto)
        bomb = gzip.compress(b"\x0a" + b"\0" * (4 * 1024 * 1024))
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=bomb,
                              headers={"Content-Type": PB, "Content-Encoding": "gzip"}) as r:
                assert r.status == 413, auto
        assert receiver.stats["rejected"]["too_large"] == 1
        await assert_still_serving(port)


@pytest.mark.parametrize(("ctype", "encoding", "body", "status", "reason"), [
    ("text/plain", None, b"hello", 415, "unsupported_media_type"),
    (None, None, b"\x0a\x00", 415, "unsupported_media_type"),
    (PB, "zstd-but-not-really", b"\x0a\x00", 415, "bad_encoding"),
    (PB, None, b"\xff\xff\xff\xff", 400, "undecodable"),
    (PB, None, b"", 400, "undecodable"),
    (JS, None, b"{broken", 400, "undecodable"),
    (JS, None, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz!"}]}]}]}', 400, "undecodable"),
    (PB, "gzip", b"\x1f\x8b\x08\x00garbage-not-deflate", 400, "bad_encoding"),
])
@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_4xx_answers_and_keeps_serving(serve, ctype, encoding, body, status, reason, auto_decompress):
    sink = Sink()
    receiver = OtlpReceiver(sink)
    port = await serve(receiver, auto_decompress=auto_decompress)
    headers = {"Content-Type": ctype} if ctype else {}
    if encoding:
        headers["Content-Encoding"] = encoding
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=body, headers=headers) as r:
            assert r.status == status
            raw = await r.read()
            if ctype == PB:
                assert r.content_type == PB and Status.FromString(raw).message
            else:
                assert r.content_type == JS and json.loads(raw)["message"]
    assert receiver.stats["rejected"][reason] == 1 and receiver.stats["requests"] == 1
    await assert_still_serving(port)
    assert len(sink.spans) == 1


@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_brotli_is_accepted_only_when_aiohttp_inflated_it(serve, auto_decompress):
    """decode_traces knows gzip and deflate; aiohttp's server inflates br itself (brotli is a
    dependency), and the receiver sees that the body arrived plain."""
    import brotli

    sink = Sink()
    receiver = OtlpReceiver(sink)
    port = await serve(receiver, auto_decompress=auto_decompress)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=brotli.compress(json.dumps(json_doc()).encode()),
                          headers={"Content-Type": JS, "Content-Encoding": "br"}) as r:
            assert r.status == (200 if auto_decompress else 415)
    assert len(sink.spans) == (1 if auto_decompress else 0)
    assert receiver.stats["rejected"]["bad_encoding"] == (0 if auto_decompress else 1)


async def test_success_answer_is_an_export_response_in_the_request_format(serve):
    port = await serve(OtlpReceiver(Sink()))
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    async with aiohttp.ClientSession() as s:
        req = ExportTraceServiceRequest()
        req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\1" * 16, span_id=b"\2" * 8, name="x")
        async with s.post(f"http://127.0.0.1:{port}/v1/traces", data=req.SerializeToString(), headers={"Content-Type": PB}) as r:
            assert r.status == 200 and r.content_type == PB
            assert ExportTraceServiceResponse.FromString(await r.read()) == ExportTraceServiceResponse()
        async with s.get(f"http://127.0.0.1:{port}/v1/traces") as r:
            assert r.status == 405


async def test_on_spans_raising_is_counted(serve):
    sink = Sink(fail=True)
    receiver = OtlpReceiver(sink)
    port = await serve(receiver)
    sdk = await asyncio.to_thread(sdk_trace, port)
    check_same(await sink.wait(2), sdk)  # the exporter was told 200 both times
    assert receiver.stats["on_spans_errors"] == 2 and receiver.stats["spans"] == 2
    assert sum(receiver.stats["rejected"].values()) == 0


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def header_recorder(seen: list[dict[str, str]]) -> Callable:
    @web.middleware
    async def record(request: web.Request, handler: Callable) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return await handler(request)
    return record


@pytest.mark.parametrize(("compression", "auto_decompress"), [
    (Compression.NoCompression, True), (Compression.Gzip, False), (Compression.Gzip, True)])
async def test_forwarding_to_a_second_receiver(serve, compression, auto_decompress):
    downstream = Sink()
    seen: list[dict[str, str]] = []
    down_port = await serve(OtlpReceiver(downstream), middlewares=(header_recorder(seen),))
    local = Sink()
    forwarder = OtlpForwarder(f"http://127.0.0.1:{down_port}")  # base URL: /v1/traces is appended
    receiver = OtlpReceiver(local, forwarder=forwarder)
    port = await serve(receiver, forwarder=forwarder, auto_decompress=auto_decompress)

    sdk = await asyncio.to_thread(sdk_trace, port, compression)
    check_same(await local.wait(2), sdk)
    check_same(await downstream.wait(2), sdk)
    assert sorted(map(ReceivedSpan.to_dict, downstream.spans), key=str) == sorted(map(ReceivedSpan.to_dict, local.spans), key=str)
    await until(lambda: forwarder.stats["sent"] == 2)  # the 200 reaches the forwarder after on_spans ran
    assert forwarder.stats["failed"] == forwarder.stats["dropped"] == forwarder.stats["queued"] == 0
    assert all(h["Content-Type"] == PB for h in seen)
    # the original encoding goes on when the receiver got the original bytes
    expect = "gzip" if compression == Compression.Gzip and not auto_decompress else None
    assert [h.get("Content-Encoding") for h in seen] == [expect, expect]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def post_timed(session: aiohttp.ClientSession, port: int, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.monotonic()
        async with session.post(f"http://127.0.0.1:{port}/v1/traces", data=json.dumps(json_doc(f"{i + 1:032x}")),
                                headers={"Content-Type": JS}) as r:
            assert r.status == 200
        times.append(time.monotonic() - t0)
    return times


async def test_forwarding_to_a_dead_port_counts_failures(serve):
    sink = Sink()
    forwarder = OtlpForwarder(f"http://127.0.0.1:{dead_port()}/v1/traces", timeout=5)
    receiver = OtlpReceiver(sink, forwarder=forwarder)
    port = await serve(receiver, forwarder=forwarder)
    async with aiohttp.ClientSession() as s:
        times = await post_timed(s, port, 20)
    assert max(times) < 0.5, times
    assert len(await sink.wait(20)) == 20
    await until(lambda: forwarder.stats["failed"] == 20)
    assert forwarder.stats["sent"] == 0 and forwarder.stats["dropped"] == 0
    assert "Connect" in forwarder.stats["last_error"] or "refused" in forwarder.stats["last_error"]
    sdk = await asyncio.to_thread(sdk_trace, port)  # the real exporter is still answered 200
    check_same((await sink.wait(22))[20:], sdk)


async def test_hanging_collector_never_slows_the_receiver(serve):
    """A collector that accepts and never answers: forwards hang, the queue fills, drops are
    counted, the exporter's answers stay prompt, and stop() leaves nothing behind."""
    held: list[asyncio.StreamWriter] = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hole = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    try:
        sink = Sink()
        forwarder = OtlpForwarder(f"http://127.0.0.1:{hole_port}", max_queue=3, timeout=30)
        receiver = OtlpReceiver(sink, forwarder=forwarder)
        port = await serve(receiver)
        await forwarder.start()
        async with aiohttp.ClientSession() as s:
            times = await post_timed(s, port, 12)
            await asyncio.sleep(0.2)
            assert held, "the forwarder should be stuck talking to the black hole"
            times += await post_timed(s, port, 3)
        assert max(times) < 0.5, times
        assert len(sink.spans) == 15
        # one in flight, three queued, the rest dropped
        assert forwarder.stats["dropped"] >= 15 - 1 - 3 and forwarder.stats["sent"] == 0

        t0 = time.monotonic()
        await forwarder.stop(drain_timeout=0.3)
        assert time.monotonic() - t0 < 2
        assert forwarder.stats["dropped"] == 15 - forwarder.stats["failed"]  # nothing unaccounted for
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "otlp-forwarder"]
        assert forwarder.submit(b"x", PB) is False  # stopped: counted, not queued
    finally:
        for w in held:
            w.close()
        hole.close()
        await hole.wait_closed()
