"""The read model behind the API and the TUI, on a store written by the real StoreWriter."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

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
from pdp_observe.filterlang import FilterError
from pdp_observe.query import Query
from pdp_observe.store import StoreWriter
from pdp_observe.transactions import Transaction
from tests.conftest import run_cli

T0 = 1_700_000_000.0


def make(i: int, ts: float, ms: float, *, model: str | None = "User", action: str | None = "findMany",
         fp: str | None = "fpA", status: int = 200, code: str | None = None, txn: str | None = None,
         kind: str = "query", sql: tuple[str, ...] = (), pool: dict | None = None, engine_ms: float | None = None,
         resp: bytes = b'{"data":{}}') -> Exchange:
    op = Operation(protocol="engine-json", kind=kind, model=model, action=action, fingerprint=fp, txn=txn,
                   error_code=code, sql=[SqlStatement(s) for s in sql],
                   details={"shape": f"{model}.{action}({{where}})"} if model else {})
    telemetry = {"engine": {"engine_ms": engine_ms, "spans": [], "sql": []}} if engine_ms is not None else None
    return Exchange(
        id=f"{i:08x}" + "0" * 24,
        request=Request("POST", f"/?i={i}", [("Content-Type", "application/json")],
                        Body(data=b'{"q":%d}' % i, size=7, sha256="s" * 64)),
        timings=Timings(ts, ts + 0.0001, ts + ms / 2000.0, ts + ms / 1000.0),
        response=Response(status, "OK", [("Content-Type", "application/json")],
                          Body(data=resp, size=len(resp), sha256="r" * 64)),
        operation=op, pool=pool, telemetry=telemetry)


@pytest.fixture
def store(tmp_path: Path):
    """20 exchanges: 10 User.findMany (1..10 ms), 5 Post.createOne (100..500 ms, one P2002),
    a transaction (start, two findUnique, commit) and one HTTP 500; pool samples, a pressure snapshot."""
    db = str(tmp_path / "c.db")
    w = StoreWriter(db)
    exs = [make(i, T0 + i, i, pool={"in_flight": 1, "engine_end": {"pool": {"busy": i % 4, "open": 5}}})
           for i in range(1, 11)]
    exs += [make(10 + k, T0 + 10 + k, 100.0 * k, model="Post", action="createOne", fp="fpB",
                 code="P2002" if k == 3 else None, sql=('INSERT INTO "Post" ("title") VALUES ($1)',),
                 engine_ms=50.0 * k) for k in range(1, 6)]
    # transaction: start 16.0 (2 ms), query 16.010 (3 ms), query 16.020 (4 ms), commit 16.030 (1 ms)
    tx = "tx-0001"
    exs += [make(16, T0 + 16.0, 2, model=None, action=None, fp=None, kind="tx_start", txn=tx),
            make(17, T0 + 16.010, 3, action="findUnique", fp="fpC", txn=tx),
            make(18, T0 + 16.020, 4, action="findUnique", fp="fpC", txn=tx),
            make(19, T0 + 16.030, 1, model=None, action=None, fp=None, kind="tx_commit", txn=tx),
            make(20, T0 + 17, 9, status=500, fp="fpA")]
    transaction = Transaction(tx, "engine-json", [e.id for e in exs[15:19]], T0 + 16.0, T0 + 16.031,
                              31.0, 2, "committed")
    samples = [("pool_sample", PoolSample(T0 + s, {"busy": s, "open": 5})) for s in (1, 2, 3)]
    snap = PressureSnapshot(exs[19].id, T0 + 17, "http_500", {"trigger": "http_500", "in_flight_count": 0})
    w.write(exs[:10], samples)
    w.write(exs[10:], [transaction, snap])
    w.close()
    q = Query(db)
    yield q, db, exs
    q.close()


def ids(rows):
    return [int(r["id"][:8], 16) for r in rows]


def test_page_default_is_newest_first_with_stable_fields(store):
    q, _, _ = store
    page = q.page(limit=5)
    assert page["total"] == 20 and page["offset"] == 0
    assert ids(page["rows"]) == [20, 19, 18, 17, 16]
    row = q.page(offset=19, limit=5)["rows"][0]
    assert ids([row]) == [1]
    for key in ("id", "ts", "method", "path", "status", "duration_ms", "req_bytes", "resp_bytes", "failure",
                "truncated", "protocol", "kind", "model", "action", "fingerprint", "txn", "error_code", "sql",
                "engine_ms", "sql_timings", "trace_id", "pool", "pressure", "seq", "pool_busy", "pool_size"):
        assert key in row
    assert (row["seq"], row["ts"], row["duration_ms"], row["model"], row["pool_busy"], row["pool_size"]) == \
        (1, T0 + 1, 1.0, "User", 1, 5)
    assert q.page(offset=18, limit=5, desc=False)["rows"][0]["seq"] == 19
    assert q.page(offset=25)["rows"] == []


def test_sorts_break_ties_by_seq(store):
    q, _, _ = store
    by_ms = q.page(sort="ms", limit=3)["rows"]
    assert ids(by_ms) == [15, 14, 13] and [r["duration_ms"] for r in by_ms] == [500.0, 400.0, 300.0]
    assert [r["duration_ms"] for r in q.page(sort="ms", desc=False, limit=2)["rows"]] == [1.0, 1.0]
    assert ids(q.page(sort="status", limit=4)["rows"]) == [20, 19, 18, 17]  # 200 ties: by seq, same direction
    assert ids(q.page(sort="status", desc=False, limit=3)["rows"]) == [1, 2, 3]
    assert ids(q.page(sort="engine", limit=2)["rows"]) == [15, 14]
    assert ids(q.page(sort="code", limit=1)["rows"]) == [13]
    assert ids(q.page(sort="sqls", limit=5)["rows"]) == [15, 14, 13, 12, 11]
    models = [r["model"] for r in q.page(sort="model", desc=False, limit=20)["rows"]]
    assert models == [None, None] + ["Post"] * 5 + ["User"] * 13
    with pytest.raises(ValueError, match="unknown sort"):
        q.page(sort="nope")


def test_filters_page_and_count(store):
    q, _, _ = store
    page = q.page(filter="model:Post ms:>250", limit=10)
    assert page["total"] == 3 and ids(page["rows"]) == [15, 14, 13]
    assert q.page(filter="is:error")["total"] == 2  # the P2002 and the 500
    assert ids(q.page(filter="txn:tx-0001", desc=False)["rows"]) == [16, 17, 18, 19]
    with pytest.raises(FilterError) as err:
        q.page(filter="ms:>>5")
    assert err.value.position >= 0


def test_keyset_and_offset_give_the_same_pages(store):
    q, db, _ = store
    everything = [r["seq"] for r in q.page(limit=1000)["rows"]]
    assert everything == list(range(20, 0, -1))
    keyset = [[r["seq"] for r in q.page(offset=o, limit=7)["rows"]] for o in range(22)]
    assert keyset == [everything[o:o + 7] for o in range(22)]
    keyset_asc = [[r["seq"] for r in q.page(offset=o, limit=7, desc=False)["rows"]] for o in range(22)]
    assert keyset_asc == [everything[::-1][o:o + 7] for o in range(22)]
    # a gap (retention deleting by time can leave one): the offset fallback, same answers
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM exchanges WHERE seq = 10")
    conn.commit()
    conn.close()
    fresh = Query(db)
    try:
        remaining = [s for s in everything if s != 10]
        assert fresh.page(limit=1000)["total"] == 19
        got = [[r["seq"] for r in fresh.page(offset=o, limit=7)["rows"]] for o in range(21)]
        assert got == [remaining[o:o + 7] for o in range(21)]
    finally:
        fresh.close()


def test_exchange_is_show_json_plus_its_transaction(store):
    q, db, exs = store
    data = q.exchange(exs[17].id[:8])
    shown = json.loads(run_cli("show", "--db", db, "--json", exs[17].id[:8]).stdout)
    assert json.loads(json.dumps({k: v for k, v in data.items() if k not in ("seq", "transaction")})) == shown
    assert data["seq"] == 18 and data["request"]["body"]["text"] == '{"q":18}'
    assert data["transaction"] == {"txn": "tx-0001", "outcome": "committed", "started": T0 + 16.0,
                                   "ended": T0 + 16.031, "duration_ms": 31.0, "query_count": 2,
                                   "exchange_count": 4, "position": 2, "error_code": None}
    assert q.exchange(exs[0].id)["transaction"] is None
    assert q.exchange(exs[19].id)["pressure"]["trigger"] == "http_500"
    with pytest.raises(LookupError, match="no exchange"):
        q.exchange("ffff")
    with pytest.raises(ValueError, match="ambiguous"):
        q.exchange("0")
    with pytest.raises(ValueError, match="not an exchange id"):
        q.exchange("xyz")


def test_transaction_members_and_gaps(store):
    q, _, exs = store
    tx = q.transaction("tx-00")  # a prefix works
    assert (tx["txn"], tx["outcome"], tx["duration_ms"], tx["query_count"]) == ("tx-0001", "committed", 31.0, 2)
    assert [m["id"] for m in tx["exchanges"]] == [e.id for e in exs[15:19]]
    assert [m["gap_ms"] for m in tx["exchanges"]] == [None, pytest.approx(8.0), pytest.approx(7.0),
                                                     pytest.approx(6.0)]
    assert tx["idle_ms"] == pytest.approx(21.0) and tx["busy_ms"] == pytest.approx(10.0)
    assert tx["missing"] == []
    with pytest.raises(LookupError, match="no transaction"):
        q.transaction("nope")


def test_operations_like_pg_stat_statements(store):
    q, _, exs = store
    ops = q.operations(until=T0 + 100)
    by_fp = {o["fingerprint"]: o for o in ops}
    assert [o["fingerprint"] for o in ops[:3]] == ["fpB", "fpA", "fpC"]
    b = by_fp["fpB"]
    assert (b["model"], b["action"], b["count"], b["errors"]) == ("Post", "createOne", 5, 1)
    assert (b["p50"], b["p95"], b["p99"], b["max"], b["total_ms"]) == (300.0, 500.0, 500.0, 500.0, 1500.0)
    assert b["shape"] == "Post.createOne({where})" and b["slowest_id"] == exs[14].id
    a = by_fp["fpA"]  # 1..10 ms and the 9 ms HTTP 500
    assert (a["count"], a["errors"], a["p50"], a["p95"], a["max"], a["total_ms"]) == (11, 1, 6.0, 10.0, 10.0, 64.0)
    total = 1500 + 64 + 7 + 3  # + the transaction's queries (fpC) and its start/commit (no fingerprint)
    assert b["share"] == pytest.approx(1500 / total, abs=1e-6)
    assert sum(o["share"] for o in ops) == pytest.approx(1.0, abs=1e-5)
    unfingerprinted = [o for o in ops if o["fingerprint"] is None]
    assert sorted(o["kind"] for o in unfingerprinted) == ["tx_commit", "tx_start"]
    # window: the last 5 s before T0+17.5 holds the 5 createOnes' last two, the transaction, the 500
    window = [(o["fingerprint"] or o["kind"], o["count"]) for o in q.operations(window_s=5, until=T0 + 17.5)]
    assert window == [("fpB", 3), ("fpA", 1), ("fpC", 2), ("tx_start", 1), ("tx_commit", 1)]  # 1200, 9, 7, 2, 1 ms
    assert q.operations(filter="model:Post", until=T0 + 100)[0]["count"] == 5
    assert len(q.operations(limit=1, until=T0 + 100)) == 1


def test_pool_samples_and_per_second_series(store):
    q, _, _ = store
    p = q.pool(T0, until=T0 + 20)
    assert [s["pool"]["busy"] for s in p["samples"]] == [1, 2, 3]
    series = {s["t"]: s for s in p["series"]}
    assert series[int(T0) + 1] == {"t": int(T0) + 1, "requests": 1, "errors": 0, "max_in_flight": 1}
    assert series[int(T0) + 13]["errors"] == 1  # the P2002
    assert series[int(T0) + 16]["requests"] == 4 and series[int(T0) + 17]["errors"] == 1
    # the 500 ms createOne at +15 and the 400 ms one at +14 do not overlap: one at a time
    assert max(s["max_in_flight"] for s in p["series"]) == 1
    assert [s["t"] for s in p["series"]] == list(range(int(T0) + 1, int(T0) + 18))  # gaps filled


def test_stats(store):
    q, _, _ = store
    s = q.stats()
    assert (s["exchanges"], s["transactions"], s["first_ts"], s["last_ts"]) == (20, 1, T0 + 1, T0 + 17)
    assert s["dropped"] == {} and s["summary"] is None


@pytest.mark.slow
def test_a_page_anywhere_in_a_million_rows_is_fast(tmp_path):
    db = str(tmp_path / "big.db")
    w = StoreWriter(db)
    w.write([make(1, T0, 5.0)])
    cols = ("ts, method, path, status, duration_ms, req_bytes, resp_bytes, failure, truncated, record, "
            "req_body, resp_body, protocol, kind, model, action, fingerprint, txn, error_code, sql_count, "
            "engine_ms, trace_id")
    w.conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
        f"INSERT INTO exchanges (id, {cols}) SELECT printf('%032x', i), ts + i * 0.001, method, path, status, "
        f"(i * 7919) % 1000, req_bytes, resp_bytes, failure, truncated, record, req_body, resp_body, protocol, "
        f"kind, model, action, fingerprint, txn, error_code, sql_count, engine_ms, trace_id "
        f"FROM n, (SELECT * FROM exchanges WHERE seq = 1)")
    w.close()
    q = Query(db)
    try:
        assert q.page(limit=1)["total"] == 1_000_000
        for sort, offset in (("time", 0), ("time", 500_000), ("time", 999_940), ("ms", 0), ("ms", 500_000)):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                page = q.page(sort=sort, offset=offset, limit=60)
                best = min(best, time.perf_counter() - t0)
            assert len(page["rows"]) == 60
            assert best < 0.05, f"{sort} page at offset {offset} took {best * 1000:.1f} ms"
    finally:
        q.close()
