"""Correlation on real stacks: Prisma 7.2 → sidecar → executor 7.2, and Prisma 6.19 (binary
engine client) → sidecar → the real 6.19 engine with telemetry in responses — on PostgreSQL.

1. Every query the workload ran carries the engine's spans and SQL timings.
2. The client cannot tell: each recorded read-only request, replayed with and without the
   client's own telemetry header, gets byte-identical answers directly and through the sidecar.
3. Pool exhaustion (pool of 1, 0.5 s pool timeout, a transaction holding the connection): the
   P2024 exchanges carry a pressure snapshot naming the holder and the engine's pool sample.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pdp_observe.sidecar import start_sidecar
from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings, run_cli
from tests.stacks import harness

pytestmark = pytest.mark.e2e
ENGINE_ENV = {"ENGINE_TELEMETRY_IN_RESPONSE": "1", "ENGINE_METRICS": "1"}
READ_ONLY = {"findMany", "findUnique", "findFirst", "findUniqueOrThrow", "findFirstOrThrow", "count",
             "aggregate", "groupBy"}
_SKIP_HEADERS = {"host", "content-length", "connection", "x-capture-telemetry", "traceparent",
                 "authorization", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def _rows(db: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run_cli("ls", "--db", str(db), "--json", "--last", "0").stdout.splitlines()]


async def _send(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent", "Content-Type")) as s:
        async with s.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, data=body) as r:
            return r.status, await r.read()


@pytest.mark.parametrize("stack", ["qpe72", "qe619"])
async def test_telemetry_joined_and_answers_byte_identical(stack: str, postgres: harness.Postgres,
                                                            tmp_path: Path) -> None:
    server_kind, client_kind = harness.STACKS[stack]
    db_url = postgres.create_database(f"corr_{stack}")
    db = tmp_path / "captures.db"
    request_log = tmp_path / "server-requests.jsonl"
    env = {**(ENGINE_ENV if server_kind == "engine" else {}), "REQUEST_LOG": str(request_log)}
    with harness.start_server(server_kind, db_url, env=env) as server:
        sc = await start_sidecar(make_settings(server.base_url, db, recorder="process"))
        try:
            steps = await asyncio.to_thread(harness.run_workload, client_kind,
                                            harness.client_url(client_kind, sc.port))
            assert steps, "the workload ran no step"
            await await_stored(sc, len(request_log.read_text().splitlines()))
            rows = _rows(db)

            # 1. every successful query carries what the engine did
            queries = [r for r in rows if r["kind"] in ("query", "batch") and r["status"] == 200
                       and not r["error_code"]]
            assert len(queries) >= 10
            for r in queries:
                assert r["engine_ms"] is not None, r
                assert r["sql_timings"] and all(t["ms"] is not None and t["sql"] for t in r["sql_timings"]), r
            assert all(r["trace_id"] for r in rows)

            # 2. replay read-only requests: direct vs through the sidecar, with/without client telemetry
            reader = StoreReader(str(db))
            try:
                replays = []
                for r in rows:
                    if r["action"] in READ_ONLY and r["status"] == 200 and not r["txn"] and r["kind"] == "query":
                        ex = reader.get(r["id"])
                        headers = {k: v for k, v in ex.request.headers if k.lower() not in _SKIP_HEADERS}
                        replays.append((ex.request.method, ex.request.path, headers, ex.request.body.data))
            finally:
                reader.close()
            assert len(replays) >= 4
            compared = 0
            for method, path, headers, body in replays:
                for client_header in (None, "error", "warn, error"):
                    h = dict(headers)
                    if client_header is not None:
                        h["X-Capture-Telemetry"] = client_header
                    direct = await _send(server.port, method, path, h, body)
                    proxied = await _send(sc.port, method, path, h, body)
                    assert proxied == direct, (path, client_header, proxied, direct)
                    compared += 1
            assert compared >= 12
        finally:
            await sc.stop()


async def test_pool_exhaustion_snapshot_names_the_holder(postgres: harness.Postgres, tmp_path: Path) -> None:
    db_url = postgres.create_database("corr_pool")
    db = tmp_path / "captures.db"
    env = {**ENGINE_ENV, "POOL_MAX": "1", "POOL_TIMEOUT_MS": "500"}
    find_many = json.dumps({"modelName": "User", "action": "findMany",
                            "query": {"arguments": {}, "selection": {"$scalars": True}}}).encode()
    json_h = {"Content-Type": "application/json"}
    with harness.start_server("engine", db_url, env=env) as server:
        settings = make_settings(server.base_url, db, recorder="process",
                                 engine_metrics_url=f"{server.base_url}/metrics", engine_metrics_interval=0.1)
        sc = await start_sidecar(settings)
        try:
            status, body = await _send(sc.port, "POST", "/transaction/start", json_h,
                                       json.dumps({"max_wait": 2000, "timeout": 20000}).encode())
            assert status == 200, body
            txn = json.loads(body)["id"]
            status, _ = await _send(sc.port, "POST", "/", {**json_h, "X-transaction-id": txn}, find_many)
            assert status == 200
            await asyncio.sleep(0.4)  # the holder is visibly old, and the scraper has seen it
            starved = await asyncio.gather(*(_send(sc.port, "POST", "/", json_h, find_many) for _ in range(2)))
            for status, body in starved:
                assert status == 200 and json.loads(body)["errors"][0]["user_facing_error"]["error_code"] == "P2024"
            status, _ = await _send(sc.port, "POST", f"/transaction/{txn}/commit", json_h, b"")
            assert status == 200
            await await_stored(sc, 5)
            await asyncio.sleep(2.5)  # snapshots settle 1.5 s after their instant
        finally:
            await sc.stop()
    rows = _rows(db)
    failed = [r for r in rows if r["error_code"] == "P2024"]
    assert len(failed) == 2
    for r in failed:
        p = r["pressure"]
        assert p is not None and p["trigger"] == "P2024"
        [holder] = p["open_transactions"]
        assert holder["txn"] == txn and holder["queries"] == 1 and holder["age_ms"] >= 400
        assert holder["fingerprints"]  # what the holder ran
        pool = p["engine_pool"]["pool"]
        assert pool["open"] == 1 and pool["busy"] == 1  # the engine's own view: the one connection is taken
        assert r["pool"]["open_transactions"] >= 1
    # the waiter that failed first saw the other one still waiting (in flight at its instant)
    seen = [{h["id"] for h in r["pressure"]["in_flight"]} for r in failed]
    assert failed[1]["id"] in seen[0] or failed[0]["id"] in seen[1]
    show = run_cli("show", "--db", str(db), failed[0]["id"]).stdout
    assert "PRESSURE    P2024" in show and f"txn {txn}" in show


@pytest.mark.parametrize("stack", ["qpe72", "qe619"])
async def test_trace_chain_client_sidecar_engine(stack: str, postgres: harness.Postgres, tmp_path: Path) -> None:
    """A client span's traceparent → the sidecar's server span (its child) → the real engine's
    spans (children of the sidecar span, with the engine's own times), in one trace."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    server_kind, _ = harness.STACKS[stack]
    db_url = postgres.create_database(f"chain_{stack}")
    if server_kind == "engine":
        path, body = "/", json.dumps({"modelName": "User", "action": "findMany",
                                      "query": {"arguments": {}, "selection": {"$scalars": True}}}).encode()
    else:  # a real Prisma 7.2 client's findMany plan, from the recorded traffic
        import base64
        recorded = Path(__file__).resolve().parent.parent / "fixtures" / "recorded" / "qpe72.jsonl"
        rec = next(e for e in map(json.loads, recorded.read_text().splitlines())
                   if e["path"] == "/query" and b'"findMany"' in base64.b64decode(e["req_body_b64"]))
        path, body = "/query", base64.b64decode(rec["req_body_b64"])
    exporter = InMemorySpanExporter()
    client_trace, client_span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    env = ENGINE_ENV if server_kind == "engine" else None
    with harness.start_server(server_kind, db_url, env=env) as server:
        sc = await start_sidecar(make_settings(server.base_url, tmp_path / "c.db"),
                                 span_processor=SimpleSpanProcessor(exporter))
        try:
            status, _ = await _send(sc.port, "POST", path, {"Content-Type": "application/json",
                                                            "traceparent": f"00-{client_trace}-{client_span}-01"}, body)
            assert status == 200
            await await_stored(sc, 1)
        finally:
            await sc.stop()
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == client_trace]
    [server_span] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert format(server_span.parent.span_id, "016x") == client_span
    engine = [s for s in spans if s is not server_span]
    assert engine, "no engine span re-emitted"
    ids = {s.context.span_id for s in spans}
    assert all(s.parent.span_id in ids for s in engine)
    roots = [s for s in engine if s.parent.span_id == server_span.context.span_id]
    assert roots  # the engine's top spans hang under the sidecar's span
    names = {s.name for s in engine}
    assert any("db_query" in n for n in names), names
    assert all(server_span.start_time - 5_000_000 <= s.start_time <= server_span.end_time + 5_000_000
               for s in engine)  # the engine's own clock, inside the sidecar's span (±5 ms)
