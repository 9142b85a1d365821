"""A capture file with a bit of everything, written through the real StoreWriter.

Deterministic (fixed timestamps and durations) so snapshots are stable: 60 exchanges over a
minute of 2026-01-01 UTC, three models, a committed interactive transaction, Prisma errors
(one with a pressure snapshot), a refused upstream, engine telemetry and pool samples.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pdp_observe.correlate import PressureSnapshot
from pdp_observe.engine.scraper import PoolSample
from pdp_observe.exchange import (
    Body,
    Exchange,
    Operation,
    Request,
    Response,
    SqlStatement,
    Timings,
)
from pdp_observe.protocol.fingerprint import fingerprint
from pdp_observe.store import StoreWriter, migrate
from pdp_observe.transactions import Outcome, Transaction

BASE_TS = 1_767_268_800.0  # 2026-01-01T12:00:00Z
TXN = "3f2a9c1e-7b4d-4e21-9a0b-5c6d7e8f9a01"
MODELS = ("User", "Post", "Comment")
ACTIONS = ("findMany", "findUnique", "createOne", "updateOne", "count")
SECRET_MASK = "[REDACTED:3fa1c2]"


def ex_id(i: int) -> str:
    return f"{0x0193A0000000 + i:012x}{'0' * 20}"


def _body(data: bytes) -> Body:
    return Body(data=data, size=len(data), sha256=f"{len(data):064x}")


def _sql(model: str, action: str) -> str:
    table = f'"public"."{model}"'
    if action.startswith("create"):
        return f'INSERT INTO {table} ("name") VALUES ($1) RETURNING "id", "name"'
    if action.startswith("update"):
        return f'UPDATE {table} SET "name" = $1 WHERE "id" = $2 RETURNING "id"'
    if action == "count":
        return f'SELECT COUNT(*) FROM {table} WHERE 1=1'
    return f'SELECT "id", "name" FROM {table} WHERE "id" = $1 LIMIT $2 OFFSET $3'


def make_exchange(i: int, *, ts: float, model: str | None = "User", action: str | None = "findMany",
                  ms: float = 5.0, status: int | None = 200, kind: str = "query", txn: str | None = None,
                  error_code: str | None = None, failure: str | None = None, telemetry: bool = True,
                  pool_busy: int | None = None) -> Exchange:
    """One realistic engine-JSON exchange (decoded operation, SQL, telemetry, pool)."""
    req = {"modelName": model, "action": action, "query": {"arguments": {"where": {"id": i}},
                                                           "selection": {"$scalars": True}}}
    req_bytes = json.dumps(req).encode()
    headers = [("Content-Type", "application/json"), ("Authorization", SECRET_MASK),
               ("X-Request-Id", f"req-{i}")]
    if txn:
        headers.append(("X-transaction-id", txn))
    sql = [SqlStatement(sql=_sql(model or "User", action or "findMany"), params=[i, 10, 0], param_count=3,
                        duration_ms=round(ms * 0.3, 3))] if kind == "query" else []
    error_message = {"P2002": "Unique constraint failed on the fields: (`email`)",
                     "P2024": "Timed out fetching a new connection from the connection pool."}.get(error_code or "")
    op = Operation(protocol="engine-json", kind=kind, model=model, action=action,
                   fingerprint=fingerprint(model, action, "(where:{id:?})") if kind == "query" else None,
                   txn=txn, error_code=error_code, error_message=error_message, sql=sql,
                   details={"shape": f"{model}.{action}(where:{{id:?}}){{$scalars}}"} if kind == "query" else {})
    received = ts
    done = ts + ms / 1000.0
    timings = Timings(received=received, upstream_connected=received + 0.0002,
                      first_byte=done - 0.0003 if failure is None else None, done=done)
    response = None
    if failure is None:
        if error_code:
            payload: Any = {"errors": [{"error": error_message,
                                        "user_facing_error": {"error_code": error_code, "message": error_message,
                                                              "meta": {"target": ["email"]}}}]}
        elif kind == "tx_start":
            payload = {"id": txn}
        else:
            payload = {"data": {f"{action}{model}": [{"id": i, "name": f"user {i}", "email": f"u{i}@example.com",
                                                       "posts": [{"id": i * 10, "title": "hello"}]}]}}
        resp_bytes = json.dumps(payload).encode()
        response = Response(status=status or 200, reason="OK" if (status or 200) < 400 else "Bad Request",
                            headers=[("Content-Type", "application/json"), ("Set-Cookie", SECRET_MASK)],
                            body=_body(resp_bytes))
    engine_ms = round(ms * 0.6, 3)
    tel = None
    if telemetry and failure is None and kind == "query":
        t0 = received + 0.0005
        tel = {"engine": {
            "shape": "gen2", "engine_ms": engine_ms,
            "spans": [
                {"id": "a1", "parent_id": None, "name": "prisma:engine:query", "start": t0,
                 "end": t0 + engine_ms / 1000, "kind": "internal", "attributes": {}},
                {"id": "a2", "parent_id": "a1", "name": "prisma:engine:connection", "start": t0 + 0.0001,
                 "end": t0 + 0.0004, "kind": "internal", "attributes": {}},
                {"id": "a3", "parent_id": "a1", "name": "prisma:engine:db_query", "start": t0 + 0.0005,
                 "end": t0 + 0.0005 + ms * 0.3 / 1000, "kind": "client", "attributes": {}},
            ],
            "sql": [{"sql": s.sql, "ms": s.duration_ms, "param_count": 3, "span_id": "a3", "start": t0 + 0.0005}
                    for s in sql],
            "logs": []}}
    pool: dict[str, Any] = {"in_flight": 1 + i % 4, "open_transactions": 1 if txn else 0, "high_water": 6,
                            "upstream_ms": round(ms - 0.5, 3), "queued_ms": round(max(0.0, ms - 0.5 - engine_ms), 3)}
    if pool_busy is not None:
        sample = {"t": ts, "pool": {"open": 10, "busy": pool_busy, "idle": 10 - pool_busy, "waiting": 0},
                  "flags": [], "wait_delta": None}
        pool["engine_start"] = pool["engine_end"] = sample
    return Exchange(
        id=ex_id(i), request=Request("POST", "/", headers, _body(req_bytes)), timings=timings, response=response,
        client="127.0.0.1:51000", upstream="http://127.0.0.1:4467", failure=failure,
        failure_detail="Connect call failed ('127.0.0.1', 4467)" if failure else None, operation=op,
        telemetry=tel, pool=pool, trace_id=f"{i:032x}", span_id=f"{i:016x}",
    )


def seed(path: Path, n: int = 60) -> list[Exchange]:
    """Write the standard capture file; returns the exchanges in recording order."""
    exchanges: list[Exchange] = []
    records: list[Any] = []
    txn_ids: list[str] = []
    for i in range(n):
        ts = BASE_TS + i
        model, action = MODELS[i % 3], ACTIONS[i % 5]
        ms = round(3.0 + (i * 37 % 50) * 1.7, 3)
        kw: dict[str, Any] = {}
        if i == 7:
            kw = {"status": 400, "error_code": "P2002", "action": "createOne"}
        elif i == 13:
            kw = {"status": 500, "error_code": "P2024", "ms": 5000.0}
        elif i == 21:
            kw = {"status": None, "failure": "upstream_refused", "telemetry": False}
        elif 30 <= i <= 33:  # an interactive transaction: start, two queries, commit
            kw = {"txn": TXN, "kind": ("tx_start", "query", "query", "tx_commit")[i - 30]}
            if kw["kind"] != "query":
                kw.update(model=None, action=None)
            txn_ids.append(ex_id(i))
        kw.setdefault("ms", ms)
        exchanges.append(make_exchange(i, ts=ts, model=kw.pop("model", model), action=kw.pop("action", action),
                                       pool_busy=i % 10, **kw))
        records.append(("pool_sample", PoolSample(t=ts, pool={"open": 10, "busy": i % 10, "idle": 10 - i % 10,
                                                               "waiting": max(0, i % 10 - 7)})))
    tx = Transaction(txn=TXN, protocol="engine-json", exchange_ids=txn_ids, started=BASE_TS + 30,
                     ended=exchanges[33].timings.done, query_count=2, outcome=Outcome.COMMITTED,
                     isolation_level="ReadCommitted")
    tx.duration_ms = round((tx.ended - tx.started) * 1000.0, 3)
    records.append(tx)
    records.append(PressureSnapshot(ex_id(13), BASE_TS + 13.5, "P2024", {
        "at": BASE_TS + 13.5, "trigger": "P2024", "open_transaction_count": 0, "open_transactions": [],
        "in_flight_count": 1, "in_flight": [{"id": ex_id(12), "method": "POST", "path": "/", "model": "Post",
                                             "action": "createOne", "age_ms": 420.0, "txn": None}]}))
    exchanges[13].pressure = None
    w = StoreWriter(str(path))
    try:
        w.write(exchanges, records)
    finally:
        w.close()
    return exchanges


def append(path: Path, start: int, count: int) -> list[Exchange]:
    """More exchanges after the seeded ones (what a running sidecar would add)."""
    new = [make_exchange(i, ts=BASE_TS + i, model="Comment", action="findFirst", ms=2.0) for i in range(start, start + count)]
    w = StoreWriter(str(path))
    try:
        w.write(new)
    finally:
        w.close()
    return new


def seed_big(path: Path, n: int) -> float:
    """``n`` minimal rows through the real schema, fast (executemany); returns seconds taken."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    migrate(conn)
    record = json.dumps({"id": "x", "request": {"method": "POST", "path": "/", "headers": [],
                                                "body": {"size": 0, "sha256": "", "truncated": False,
                                                         "encoding": None, "decode_error": None}},
                         "timings": {"received": 0, "upstream_connected": None, "first_byte": None, "done": None},
                         "response": None}).encode()
    models = ("User", "Post", "Comment")

    def rows(lo: int, hi: int) -> Any:
        for i in range(lo, hi):
            yield (f"{i:032x}", BASE_TS + i / 1000.0, "POST", "/", 200, float(i % 997) / 10.0, 64, 128, None, 0,
                   record, "engine-json", "query", models[i % 3], "findMany", f"{i % 50:016x}", None, None, 1)

    conn.execute("BEGIN")
    step = 100_000
    for lo in range(0, n, step):
        conn.executemany(
            "INSERT INTO exchanges (id, ts, method, path, status, duration_ms, req_bytes, resp_bytes, failure, "
            "truncated, record, protocol, kind, model, action, fingerprint, txn, error_code, sql_count) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows(lo, min(n, lo + step)))
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0
