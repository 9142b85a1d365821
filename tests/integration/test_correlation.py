"""Correlation through the real sidecar, against an upstream that answers with real payloads.

The upstream replays the recorded Prisma 7 traffic (tests/fixtures/recorded): a request whose
``X-Capture-Telemetry`` asks for ``tracing`` gets the stock executor's answer to exactly that
(``qpe72-capture``: spans, query logs); any other gets the answer the real client received
(``qpe72``). So "the client receives exactly what it would have received without the
sidecar" is checked byte for byte against what a real Prisma 7.2 client really received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pdp_observe.sidecar import start_sidecar
from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings, run_cli

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"


def _load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (RECORDED / f"{name}.jsonl").read_text().splitlines()]


PLAIN = {e["req_body_b64"]: e for e in _load("qpe72") if e["path"] == "/query"}
CAPTURED = {e["req_body_b64"]: e for e in _load("qpe72-capture") if e["path"] == "/query"}


def _same_step(key: str) -> bool:
    """Both recorded answers say the same apart from telemetry (same rows, same error ids),
    judged on parsed JSON: the client's answer == the captured one minus what it did not ask."""
    plain = json.loads(base64.b64decode(PLAIN[key]["resp_body_b64"]))
    captured = json.loads(base64.b64decode(CAPTURED[key]["resp_body_b64"]))
    p_ext, c_ext = plain.pop("extensions", None), captured.pop("extensions", {})
    wanted = {"logs": [log for log in c_ext.get("logs", []) if log["level"] == "error"]}
    return plain == captured and p_ext == wanted


CASES = [k for k in CAPTURED if k in PLAIN and _same_step(k)]


class Replay:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.read()
        self.seen.append({k.lower(): v for k, v in req.headers.items()})
        key = base64.b64encode(body).decode()
        asked = req.headers.get("X-Capture-Telemetry", "")
        rec = CAPTURED[key] if "tracing" in asked else PLAIN[key]
        return web.Response(status=rec["status"], body=base64.b64decode(rec["resp_body_b64"]),
                            headers={"Content-Type": "application/json"})


@pytest.fixture
async def replay() -> AsyncIterator[tuple[str, Replay]]:
    state = Replay()
    app = web.Application()
    app.router.add_post("/query", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", state
    await runner.cleanup()


def _client_headers(rec: dict[str, Any]) -> dict[str, str]:
    keep = {"accept", "content-type", "prisma-engine-hash", "x-capture-telemetry", "traceparent"}
    return {k: v for k, v in rec["req_headers"] if k.lower() in keep}


async def _post(port: int, rec: dict[str, Any], **extra: str) -> tuple[int, bytes]:
    headers = {**_client_headers(rec), **extra}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/query", data=base64.b64decode(rec["req_body_b64"]),
                          headers=headers) as r:
            return r.status, await r.read()


async def test_client_gets_byte_identical_answers_while_the_store_gets_the_engine_telemetry(
        replay: tuple[str, Replay], tmp_path: Path) -> None:
    url, state = replay
    db = tmp_path / "c.db"
    sc = await start_sidecar(make_settings(url, db))
    try:
        for key in CASES:
            status, body = await _post(sc.port, PLAIN[key])
            # exactly the bytes the real Prisma 7.2 client received without any sidecar
            assert status == PLAIN[key]["status"]
            assert body == base64.b64decode(PLAIN[key]["resp_body_b64"])
        await await_stored(sc, len(CASES))
    finally:
        await sc.stop()
    # the upstream was asked for tracing + query logs on top of the client's own "error"
    assert all(h["x-capture-telemetry"] == "error, tracing, query" for h in state.seen)

    rows = [json.loads(line) for line in run_cli("ls", "--db", str(db), "--json", "--last", "0").stdout.splitlines()]
    assert len(rows) == len(CASES)
    reader = StoreReader(str(db))
    try:
        key_of = {r["id"]: base64.b64encode(reader.get(r["id"]).request.body.data).decode() for r in rows}
    finally:
        reader.close()
    with_sql = 0
    for row in rows:
        captured = json.loads(base64.b64decode(CAPTURED[key_of[row["id"]]]["resp_body_b64"]))
        logs = [log for log in captured["extensions"].get("logs", []) if log["level"] == "query"]
        assert [t["sql"] for t in row["sql_timings"]] == [log["attributes"]["query"] for log in logs]
        assert [t["ms"] for t in row["sql_timings"]] == pytest.approx([log["attributes"]["duration"] for log in logs])
        spans = captured["extensions"].get("spans") or []
        if spans:
            t = lambda hr: hr[0] + hr[1] / 1e9  # noqa: E731
            want = (max(t(s["endTime"]) for s in spans) - min(t(s["startTime"]) for s in spans)) * 1000
            assert row["engine_ms"] == pytest.approx(want, abs=0.01)
        with_sql += bool(row["sql_timings"])
        assert re.fullmatch(r"[0-9a-f]{32}", row["trace_id"])
        assert row["pool"]["in_flight"] >= 1 and row["pressure"] is None
    assert with_sql >= len(CASES) - 2  # a few steps run no SQL at all


async def test_client_telemetry_it_asked_for_is_kept(replay: tuple[str, Replay], tmp_path: Path) -> None:
    url, _ = replay
    sc = await start_sidecar(make_settings(url, tmp_path / "c.db"))
    try:
        key = next(k for k in CASES if b'"spans"' in base64.b64decode(CAPTURED[k]["resp_body_b64"]))
        # a client that asks for tracing itself gets the spans: nothing of its own is removed
        status, body = await _post(sc.port, PLAIN[key], **{"X-Capture-Telemetry": "tracing"})
        got = json.loads(body)
        assert status == 200 and got["extensions"].get("spans")
        assert "logs" not in got["extensions"]  # it asked for no log level
        assert got["data"] == json.loads(base64.b64decode(PLAIN[key]["resp_body_b64"]))["data"]
    finally:
        await sc.stop()


async def test_traceparent_names_the_sidecar_span_and_engine_spans_are_its_children(
        replay: tuple[str, Replay], tmp_path: Path) -> None:
    url, state = replay
    exporter = InMemorySpanExporter()
    sc = await start_sidecar(make_settings(url, tmp_path / "c.db"), span_processor=SimpleSpanProcessor(exporter))
    key = next(k for k in CASES if b'"spans"' in base64.b64decode(CAPTURED[k]["resp_body_b64"]))
    client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        await _post(sc.port, PLAIN[key], traceparent=f"00-{client_trace}-{client_span}-01")
        await _post(sc.port, PLAIN[key])  # no client context: a new trace, not sampled on the wire
        await await_stored(sc, 2)
    finally:
        await sc.stop()
    sent = [h["traceparent"] for h in state.seen]
    m = re.fullmatch(rf"00-{client_trace}-([0-9a-f]{{16}})-01", sent[0])
    assert m, sent[0]
    sidecar_span = m.group(1)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", sent[1]) and client_trace not in sent[1]

    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(server) == 2
    first = next(s for s in server if format(s.context.trace_id, "032x") == client_trace)
    assert format(first.context.span_id, "016x") == sidecar_span
    assert format(first.parent.span_id, "016x") == client_span  # child of the client's span
    assert first.attributes["prisma.model"] and first.attributes["http.response.status_code"] == 200
    engine = [s for s in spans if s.context.trace_id == first.context.trace_id and s is not first]
    recorded = json.loads(base64.b64decode(CAPTURED[key]["resp_body_b64"]))["extensions"]["spans"]
    assert len(engine) == len(recorded)
    ids = {s.context.span_id for s in engine} | {first.context.span_id}
    assert all(s.parent.span_id in ids for s in engine)  # one waterfall, no orphan
    t = lambda hr: hr[0] * 10**9 + hr[1]  # noqa: E731
    assert sorted(s.start_time for s in engine) == sorted(t(r["startTime"]) for r in recorded)
    assert sorted(s.name for s in engine) == sorted(r["name"] for r in recorded)


async def test_metrics_count_operations_with_exemplars(replay: tuple[str, Replay], tmp_path: Path) -> None:
    url, _ = replay
    sc = await start_sidecar(make_settings(url, tmp_path / "c.db"))
    key = next(k for k in CASES if json.loads(base64.b64decode(k)).get("operation") == "findMany")
    model = json.loads(base64.b64decode(key))["model"]
    try:
        for _ in range(7):
            await _post(sc.port, PLAIN[key])
        await await_stored(sc, 7)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{sc.admin_port}/metrics",
                             headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
                text = await r.text()
    finally:
        await sc.stop()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ops = [s for s in fams["pdp_prisma_operations"].samples
           if s.name.endswith("_total") and s.labels.get("model") == model and s.labels["action"] == "findMany"]
    assert [(s.labels["status"], s.labels["code"], s.value) for s in ops] == [("200", "", 7.0)]
    count = next(s.value for s in fams["pdp_request_duration_ms"].samples
                 if s.name.endswith("_count") and s.labels.get("model") == model)
    assert count == 7
    engine_count = next(s.value for s in fams["pdp_engine_duration_ms"].samples if s.name.endswith("_count"))
    assert engine_count == 7
    exemplars = [s.exemplar for s in fams["pdp_request_duration_ms"].samples if s.exemplar is not None]
    assert exemplars and all(re.fullmatch(r"[0-9a-f]{32}", e.labels["trace_id"]) for e in exemplars)
    assert all(re.fullmatch(r"[0-9a-f]{16}", e.labels["exchange_id"]) for e in exemplars)


async def test_spans_exported_over_real_otlp_and_engine_otlp_spans_linked(
        replay: tuple[str, Replay], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder process exports over OTLP/HTTP (standard env vars) to a real receiver, and
    spans an engine sends to the sidecar's own /v1/traces are stored by trace id."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

    from pdp_observe.engine.otlp import OtlpReceiver

    got: list[Any] = []
    collector = web.Application()
    collector.router.add_routes(OtlpReceiver(got.extend).routes())
    runner = web.AppRunner(collector, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{runner.addresses[0][1]}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    url, _ = replay
    db = tmp_path / "c.db"
    key = next(k for k in CASES if b'"spans"' in base64.b64decode(CAPTURED[k]["resp_body_b64"]))
    client_trace, client_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        sc = await start_sidecar(make_settings(url, db, recorder="process"))
        try:
            await _post(sc.port, PLAIN[key], traceparent=f"00-{client_trace}-{client_span}-01")
            await await_stored(sc, 1)
            # an engine started with --enable-open-telemetry, pointed at the admin listener
            provider = TracerProvider()
            engine_exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sc.admin_port}/v1/traces")
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor as Simple
            provider.add_span_processor(Simple(engine_exporter))
            from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
            parent = set_span_in_context(NonRecordingSpan(SpanContext(
                int(client_trace, 16), int(client_span, 16), is_remote=True, trace_flags=TraceFlags(1))))
            with provider.get_tracer("engine").start_as_current_span("prisma:engine:query", context=parent):
                pass
            provider.shutdown()
        finally:
            await sc.stop()
    finally:
        await runner.cleanup()
    mine = [s for s in got if s.trace_id == client_trace]
    server = [s for s in mine if s.kind == "server"]
    assert len(server) == 1 and server[0].parent_span_id == client_span
    assert len(mine) > 1 and all(s.service_name == "pdp-observe" for s in mine)
    assert {s.parent_span_id for s in mine if s is not server[0]} <= {s.span_id for s in mine}
    shown = json.loads(run_cli("show", "--db", str(db), "--json", server[0].attributes["pdp.exchange_id"]).stdout)
    assert [s["name"] for s in shown["received_spans"]] == ["prisma:engine:query"]
    assert shown["received_spans"][0]["trace_id"] == client_trace


async def test_engine_pool_scraped_joined_and_reexported(replay: tuple[str, Replay], tmp_path: Path) -> None:
    """--engine-metrics-url against an engine serving the seed's real /metrics sample."""
    seed = (Path(__file__).resolve().parent.parent / "fixtures" / "metrics" / "seed-metrics.txt").read_text()
    engine = web.Application()
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=seed, content_type="text/plain")

    engine.router.add_get("/metrics", metrics)
    runner = web.AppRunner(engine, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    metrics_url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    url, _ = replay
    db = tmp_path / "c.db"
    try:
        sc = await start_sidecar(make_settings(url, db, engine_metrics_url=metrics_url,
                                               engine_metrics_interval=0.1))
        try:
            await asyncio.sleep(0.35)  # a few scrapes before the request
            await _post(sc.port, PLAIN[CASES[0]])
            await await_stored(sc, 1)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{sc.admin_port}/metrics") as r:
                    text = await r.text()
        finally:
            await sc.stop()
    finally:
        await runner.cleanup()
    idle = re.search(r"^prisma_pool_connections_idle (\S+)$", seed, re.M).group(1)
    assert f'prisma_pool_connections_idle{{upstream="{metrics_url}"}} {float(idle)}' in text
    assert re.search(r'pdp_engine_metric_flag\{flag="negative:prisma_pool_connections_open",upstream="[^"]+"\} 1\.0', text)
    assert re.search(r'pdp_engine_up\{upstream="[^"]+"\} 1\.0', text)
    [row] = [json.loads(line) for line in run_cli("ls", "--db", str(db), "--json").stdout.splitlines()]
    start = row["pool"]["engine_start"]
    assert start["pool"]["idle"] == float(idle) and start["t"] <= row["ts"]
    assert "negative:prisma_pool_connections_open" in start["flags"]  # shown as the engine says, flagged
    reader = StoreReader(str(db))
    try:
        assert len(reader.pool_samples()) >= 3
    finally:
        reader.close()
