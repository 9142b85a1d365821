"""EngineScraper against a real HTTP server on loopback that answers like the engine did.

The server replays the recorded 4.7.1 ``/metrics`` bodies in order (one per request; the
Prometheus ones on ``/metrics``, the JSON ones on ``/metrics?format=json``) and the seed
deployment's sample on ``/seed``; a script of faults (500, a sleep past the timeout, bad text)
can be queued in front. Intervals and timeouts are short so the whole file runs in ~1 s.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from pdp_observe.engine.metrics_text import parse_json, parse_prometheus, pool_from
from pdp_observe.engine.scraper import OUTCOMES, EngineScraper

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "metrics"
RECORDED = [json.loads(line) for line in (FIX / "metrics.jsonl").read_text().splitlines()]
PROM = [e["body"] for e in RECORDED if e["format"] == "prometheus"]
JSON = [e["body"] for e in RECORDED if e["format"] == "json"]
SEED = (FIX / "seed-metrics.txt").read_text()


class EngineStub:
    """A loopback /metrics server: replays bodies in order, or runs queued faults first."""

    def __init__(self) -> None:
        self.queues = {"prometheus": deque(PROM), "json": deque(JSON)}
        self.script: deque[tuple[str, object]] = deque()
        self.requests: list[tuple[str, str, int]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.read()
        self.requests.append((req.method, req.path_qs, len(body)))
        if req.path == "/seed":
            return web.Response(text=SEED, content_type="text/plain")
        if self.script:
            kind, arg = self.script.popleft()
            if kind == "status":
                return web.Response(status=int(arg), text="engine exploded")  # type: ignore[call-overload]
            if kind == "sleep":
                await asyncio.sleep(float(arg))  # type: ignore[arg-type]
            if kind == "text":
                return web.Response(text=str(arg), content_type="text/plain")
        fmt = "json" if "format=json" in req.query_string else "prometheus"
        queue = self.queues[fmt]
        text = queue.popleft() if len(queue) > 1 else queue[0]  # the last body repeats
        return web.Response(text=text, content_type="application/json" if fmt == "json" else "text/plain")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def stub():
    s = EngineStub()
    await s.start()
    yield s
    await s.stop()


async def test_replays_recorded_scrapes_and_joins_by_time(stub: EngineStub) -> None:
    scraper = EngineScraper(stub.url(), interval=0.01, timeout=1.0)
    try:
        samples = [await scraper.scrape_once() for _ in PROM]
    finally:
        await scraper.stop()
    assert all(s is not None for s in samples) and scraper.samples == samples
    assert scraper.counts == {"ok": 36, "http_error": 0, "timeout": 0, "connect_error": 0, "parse_error": 0}
    assert {r[:1] + r[2:] for r in stub.requests} == {("GET", 0)}  # GET, no body
    for sample, body in zip(samples, PROM):
        assert sample.pool == pool_from(parse_prometheus(body))
        assert sample.pool["waiting"] == int(re.search(r"^prisma_client_queries_wait (\d+)$", body, re.MULTILINE).group(1))
    waiting = [s.pool["waiting"] for s in samples]
    assert waiting[-1] == 8 and max(waiting) == 10
    assert "stuck_wait" in samples[-1].flags and "stuck_wait" not in samples[0].flags
    assert "type_mismatch:prisma_pool_connections_open" in samples[0].flags

    ts = [s.t for s in samples]
    assert ts == sorted(ts) and samples[0].t <= time.time()
    assert scraper.at(ts[0] - 0.001) is None
    for i, sample in enumerate(samples):
        assert scraper.at(sample.t) is sample
        if i + 1 < len(samples) and ts[i + 1] > ts[i]:
            assert scraper.at((ts[i] + ts[i + 1]) / 2) is sample
    assert scraper.at(time.time() + 60) is scraper.latest is samples[-1]


async def test_json_url_reads_json_and_agrees_with_text(stub: EngineStub) -> None:
    text = EngineScraper(stub.url(), timeout=1.0)
    js = EngineScraper(stub.url("/metrics?format=json"), timeout=1.0)
    try:
        for _ in range(len(PROM)):
            a, b = await text.scrape_once(), await js.scrape_once()
            assert a is not None and b is not None and a.pool == b.pool
            assert a.flags == b.flags
    finally:
        await text.stop()
        await js.stop()
    assert js.json and not text.json
    assert js.last_metrics is not None and js.last_metrics.format == "json"
    assert js.latest.pool == pool_from(parse_json(JSON[-1]))


async def test_health_counts_exact_and_scraping_continues(stub: EngineStub) -> None:
    scraper = EngineScraper(stub.url(), timeout=0.2)
    try:
        assert await scraper.scrape_once() is not None
        first_success = scraper.last_success

        stub.script.append(("status", 500))
        assert await scraper.scrape_once() is None
        assert scraper.last_result == "http_error" and scraper.last_error.startswith("HTTP 500")
        assert scraper.last_success == first_success

        stub.script.append(("sleep", 1.0))
        t0 = time.monotonic()
        assert await scraper.scrape_once() is None
        assert scraper.last_result == "timeout" and time.monotonic() - t0 < 0.9

        stub.script.append(("text", "<html><head><title>oops</title></head></html>"))
        assert await scraper.scrape_once() is None
        assert scraper.last_result == "parse_error" and "HTML" in scraper.last_error

        assert await scraper.scrape_once() is not None  # the engine again: goes on
        port = stub.port
        await stub.stop()
        assert await scraper.scrape_once() is None
        assert scraper.last_result == "connect_error"

        await stub.start(port)  # the engine is back on the same port
        assert await scraper.scrape_once() is not None
        assert scraper.last_result == "ok" and scraper.last_success > first_success
    finally:
        await scraper.stop()
    assert scraper.counts == {"ok": 3, "http_error": 1, "timeout": 1, "connect_error": 1, "parse_error": 1}
    health = scraper.health()
    assert health["counts"] == scraper.counts and health["samples"] == 3
    assert health["last_duration"] is not None and health["last_duration"] < 0.5
    assert len(scraper.samples) == 3


async def test_loop_survives_every_failure_and_stops_clean(stub: EngineStub) -> None:
    stub.script.extend([("status", 503), ("sleep", 0.5), ("text", "garbage\n"), ("status", 404)])
    scraper = EngineScraper(stub.url(), interval=0.02, timeout=0.1)
    await scraper.start()
    await scraper.start()  # idempotent
    try:
        deadline = time.monotonic() + 5
        while scraper.counts["ok"] < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await scraper.stop()
    assert scraper.counts["ok"] >= 5
    assert (scraper.counts["http_error"], scraper.counts["timeout"], scraper.counts["parse_error"]) == (2, 1, 1)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "engine-scraper"]
    n = len(stub.requests)
    await asyncio.sleep(0.08)
    assert len(stub.requests) == n  # stopped means stopped
    assert await scraper.scrape_once() is not None  # usable again after stop (new session)
    await scraper.stop()


async def test_collector_reexports_with_upstream_label_flags_and_health(stub: EngineStub) -> None:
    engine = EngineScraper(stub.url(), timeout=1.0)
    seed = EngineScraper(stub.url("/seed"), timeout=1.0)
    try:
        for _ in PROM:
            await engine.scrape_once()
        await seed.scrape_once()
        stub.script.append(("status", 500))
        await engine.scrape_once()  # the export keeps the last good document
    finally:
        await engine.stop()
        await seed.stop()

    registry = CollectorRegistry()
    registry.register(engine.collector("qe471"))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses back

    assert 'prisma_client_queries_total{upstream="qe471"} 45.0' in text
    assert 'prisma_client_queries_wait{upstream="qe471"} 8.0' in text
    assert 'prisma_client_queries_wait_histogram_ms_bucket{le="+Inf",upstream="qe471"} 42.0' in text
    # 4.7.1's counter-typed gauge goes out as declared, under the engine's series name
    assert 'prisma_pool_connections_open{upstream="qe471"} 2.0' in text
    assert "# TYPE prisma_pool_connections_opened_total gauge" in text
    for flag in ("stuck_wait", "type_mismatch:prisma_pool_connections_open",
                 "type_mismatch:prisma_pool_connections_opened_total"):
        assert f'pdp_engine_metric_flag{{flag="{flag}",upstream="qe471"}} 1.0' in text
    assert 'pdp_engine_scrapes_total{result="ok",upstream="qe471"} 36.0' in text
    assert 'pdp_engine_scrapes_total{result="http_error",upstream="qe471"} 1.0' in text
    assert 'pdp_engine_up{upstream="qe471"} 0.0' in text
    success = families["pdp_engine_last_scrape_success_timestamp_seconds"].samples
    assert [(s.labels, s.value) for s in success] == [({"upstream": "qe471"}, engine.last_success)]
    assert "pdp_engine_scrape_duration_seconds{upstream=\"qe471\"}" in text

    last = parse_prometheus(PROM[-1])
    expected = {(s.name, s.labels.get("le")): float(s.value) for f in last.families for s in f.samples}
    exported = {(s.name, s.labels.get("le")): s.value for f in families.values() for s in f.samples
                if s.name.startswith("prisma_")}
    assert exported == expected
    assert all(s.labels["upstream"] == "qe471" for f in families.values() for s in f.samples)
    assert {s.labels["result"] for s in families["pdp_engine_scrapes"].samples} == set(OUTCOMES)
    generate_openmetrics(registry)  # the admin's other format must not break either


async def test_collector_seed_duplicate_and_two_upstreams(stub: EngineStub) -> None:
    engine = EngineScraper(stub.url(), timeout=1.0)
    seed = EngineScraper(stub.url("/seed"), timeout=1.0)
    try:
        await engine.scrape_once()
        await seed.scrape_once()
    finally:
        await engine.stop()
        await seed.stop()

    alone = CollectorRegistry()
    alone.register(seed.collector("seed"))
    text = generate_latest(alone).decode()
    assert text.count("# TYPE prisma_pool_connections_open ") == 1  # deduped, not broken
    assert 'prisma_pool_connections_open{upstream="seed"} -9.0' in text  # the documented-type copy
    for flag in ("duplicate:prisma_pool_connections_open", "negative:prisma_pool_connections_open"):
        assert f'pdp_engine_metric_flag{{flag="{flag}",upstream="seed"}} 1.0' in text
    list(text_string_to_metric_families(text))

    both = CollectorRegistry()
    collector = seed.collector("seed").add("qe471", engine)
    both.register(collector)
    with pytest.raises(ValueError):
        both.register(engine.collector("qe471"))  # one collector for all upstreams
    text = generate_latest(both).decode()
    assert len(re.findall(r"^# TYPE prisma_client_queries_total counter$", text, re.MULTILINE)) == 1
    assert 'prisma_client_queries_total{upstream="seed"} 442.0' in text
    assert 'prisma_client_queries_total{upstream="qe471"} 0.0' in text
    # the engines disagree on the type of prisma_pool_connections_open: documented one goes out
    assert 'prisma_pool_connections_open{upstream="seed"} -9.0' in text
    assert 'prisma_pool_connections_open{upstream="qe471"}' not in text
    assert 'pdp_engine_metric_flag{flag="export_conflict:prisma_pool_connections_open",upstream="qe471"} 1.0' in text
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
