"""The read model over a capture file: pages, one exchange, transactions, operations, pool.

What the management API (``/api/v1``, :mod:`pdp_observe.api`) and the offline TUI show, as
plain dicts, from pure reads of the SQLite store (no aiohttp, no writes). Rows use the stable
``ls --json`` field names (:func:`pdp_observe.views.row_json`) plus ``seq``, ``pool_busy`` and
``pool_size``.

Cost on a large store (1,000,000 exchanges):

* :meth:`Query.page` in the default order (``sort="time"``, no filter) is a keyset read on
  ``seq`` (the store appends in order and retention deletes the oldest, so ``seq`` is
  contiguous; checked against ``count(*)`` at most once a second, with an ``OFFSET`` fallback
  when it is not): any page costs about the same, a few milliseconds. Sorts on indexed
  columns (ms, status, model, code, txn, received) walk the index; other sorts and filters
  scan. Totals of a filter are cached for a second.
* :meth:`Query.operations` fetches one small row per exchange in the window and computes
  exact percentiles in Python: about 2 s per million exchanges in the window.
* :meth:`Query.pool` reads at most ``POOL_SERIES_MAX_S`` seconds of exchanges.

A :class:`Query` may be used from several threads (the API runs each call in a worker
thread): every thread gets its own SQLite connection.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import orjson

from .exchange import Exchange, operation_from_dict
from .filterlang import compile_filter
from .store import LIST_COLUMNS, ListRow, StoreReader, ambiguous_message, match_ids, unpack
from .views import drop_summary, row_json

SORTS: dict[str, str] = {
    "time": "seq",  # recording order (when each exchange completed); see Query.page
    "received": "ts",
    "ms": "duration_ms",
    "engine": "engine_ms",
    "status": "status",
    "model": "model",
    "action": "action",
    "sqls": "sql_count",
    "size": "resp_bytes",
    "code": "error_code",
    "txn": "txn",
}
"""``sort=`` keys → the column ordered on (ties are always broken by ``seq``)."""

PAGE_MAX = 1000
CACHE_S = 1.0
POOL_SERIES_MAX_S = 3600
POOL_SAMPLES_MAX = 3600
SWEEP_LOOKBACK_S = 60.0
"""Exchanges that started this long before a pool series window still count as in flight."""

_ROW_COLS = "seq, " + ", ".join(LIST_COLUMNS) + ", record"
# two subqueries: SQLite answers a lone MIN() or MAX() from the index, both together by a scan
_BOUNDS = "SELECT (SELECT MIN(seq) FROM exchanges), (SELECT MAX(seq) FROM exchanges)"
_ERROR_SQL = "(error_code IS NOT NULL OR failure IS NOT NULL OR COALESCE(status, 0) >= 400)"


# ------------------------------------------------------------------------------ rows


def pool_gauges(pool: dict[str, Any] | None) -> tuple[Any, Any]:
    """(busy, open) connections of the engine pool when the exchange ended (else started).

    Known only when ``--engine-metrics-url`` is scraped; ``(None, None)`` otherwise.
    """
    if not pool:
        return None, None
    for edge in ("engine_end", "engine_start"):
        g = (pool.get(edge) or {}).get("pool") or {}
        if g.get("busy") is not None or g.get("open") is not None:
            return g.get("busy"), g.get("open")
    return None, None


def _finish_row(out: dict[str, Any], seq: int | None, pool: dict[str, Any] | None) -> dict[str, Any]:
    out["seq"] = seq
    out["pool_busy"], out["pool_size"] = pool_gauges(pool)
    return out


def row_from_db(r: tuple[Any, ...], pressure: dict[str, Any] | None, zd: Any) -> dict[str, Any]:
    """An API row from ``SELECT seq, <LIST_COLUMNS>, record`` (+ its pressure snapshot)."""
    values = list(r[1:-1])
    values[9] = bool(values[9])
    record = orjson.loads(unpack(r[-1], zd))
    op = operation_from_dict(record.get("operation"))
    return _finish_row(row_json(ListRow(*values), op, record, pressure), r[0], record.get("pool"))


def row_from_exchange(ex: Exchange, seq: int | None) -> dict[str, Any]:
    """The same row, from a live :class:`Exchange` (the capture worker's live feed)."""
    op, rq, rs = ex.operation, ex.request, ex.response
    lr = ListRow(
        ex.id, ex.timings.received, rq.method, rq.path, rs.status if rs else None, ex.timings.duration_ms,
        rq.body.size, rs.body.size if rs else None, ex.failure, ex.truncated,
        *((op.protocol, op.kind, op.model, op.action, op.fingerprint, op.txn, op.error_code, len(op.sql))
          if op is not None else (None,) * 8),
        ex.engine_ms, ex.trace_id,
    )
    out = row_json(lr, op, {"telemetry": ex.telemetry, "pool": ex.pool}, ex.pressure)
    return _finish_row(out, seq, ex.pool)


# --------------------------------------------------------------------- show --json


def load_exchange(reader: StoreReader, prefix: str) -> tuple[Exchange, list[dict[str, Any]]]:
    """One exchange in full (bodies, pressure snapshot) and the OTLP spans of its trace."""
    ex = reader.get(prefix)
    ex.pressure = ex.pressure or reader.pressure(ex.id)
    received = reader.spans_for_trace(ex.trace_id) if ex.trace_id else []
    return ex, received


def exchange_json(ex: Exchange, received: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``pdp-observe show --json`` prints (and ``GET /api/v1/exchanges/{id}`` returns)."""
    data = ex.to_dict()
    data["request"]["body"]["text"] = ex.request.body.data.decode("utf-8", "replace")
    if ex.response is not None:
        data["response"]["body"]["text"] = ex.response.body.data.decode("utf-8", "replace")
    data["pressure"] = ex.pressure
    data["received_spans"] = received
    return data


# ----------------------------------------------------------------------------- query


def _percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: an observed value (the smallest with ≥ p of values at or below)."""
    if not sorted_values:
        return None
    k = max(0, math.ceil(p * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def _r3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


class Query:
    """Read model over one capture file (see the module docstring for costs)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._readers: list[StoreReader] = []
        self._lock = threading.Lock()
        self._span: tuple[int, int, int, float] | None = None  # min, max, count, when
        self._totals: dict[str, tuple[int, float]] = {}
        self._closed = False

    # ---- plumbing ------------------------------------------------------------------
    def _reader(self) -> StoreReader:
        r = getattr(self._local, "reader", None)
        if r is None:
            if self._closed:
                raise RuntimeError("query closed")
            r = StoreReader(self.path)
            self._local.reader = r
            with self._lock:
                self._readers.append(r)
        return r

    def close(self) -> None:
        self._closed = True
        with self._lock:
            readers, self._readers = self._readers, []
        for r in readers:
            try:
                r.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    def _where(self, filter: str) -> tuple[str, list[Any]]:
        """SQL WHERE clause for a filter expression (``""`` = none); FilterError when invalid."""
        if not filter or not filter.strip():
            return "", []
        sql, params = compile_filter(filter).sql()
        return f" WHERE ({sql})", list(params)

    def _contiguous_span(self) -> tuple[int, int, bool]:
        """(min seq, max seq, seq has no gaps) — count(*) at most once per CACHE_S."""
        conn = self._reader().conn
        lo, hi = conn.execute(_BOUNDS).fetchone()
        if lo is None:
            return 0, -1, True
        now = time.monotonic()
        with self._lock:
            span = self._span
        if span is None or span[0] != lo or now - span[3] > CACHE_S or hi < span[1]:
            count = conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]
            # the count and the bounds are read apart: re-read the bounds to tell a race from a gap
            lo2, hi2 = conn.execute(_BOUNDS).fetchone()
            span = (lo, hi, count, now) if (lo2, hi2) == (lo, hi) else (lo, hi, -1, now - CACHE_S - 1)
            with self._lock:
                self._span = span
        # rows appended since the count keep the span contiguous (the store only appends)
        contiguous = span[2] == span[1] - span[0] + 1
        return lo, hi, contiguous

    def _total(self, where: str, params: list[Any], key: str) -> int:
        now = time.monotonic()
        with self._lock:
            hit = self._totals.get(key)
        if hit is not None and now - hit[1] <= CACHE_S:
            return hit[0]
        total = self._reader().conn.execute(f"SELECT COUNT(*) FROM exchanges{where}", params).fetchone()[0]
        with self._lock:
            if len(self._totals) > 64:
                self._totals.clear()
            self._totals[key] = (total, now)
        return total

    def _rows(self, seqs: list[int]) -> list[dict[str, Any]]:
        """Rows for these seqs, in this order (pressure snapshots joined)."""
        if not seqs:
            return []
        r = self._reader()
        found: dict[int, tuple[Any, ...]] = {}
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            q = f"SELECT {_ROW_COLS} FROM exchanges WHERE seq IN ({','.join('?' * len(chunk))})"
            for row in r.conn.execute(q, chunk):
                found[row[0]] = row
        ids = [found[s][1] for s in seqs if s in found]
        pressure: dict[str, Any] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for ex_id, data in r.conn.execute(
                    f"SELECT exchange_id, data FROM pressure WHERE exchange_id IN ({','.join('?' * len(chunk))})",
                    chunk):
                pressure[ex_id] = orjson.loads(unpack(data, r._zd))
        return [row_from_db(found[s], pressure.get(found[s][1]), r._zd) for s in seqs if s in found]

    # ---- pages ---------------------------------------------------------------------
    def page(self, filter: str = "", sort: str = "time", desc: bool = True, offset: int = 0,
             limit: int = 100) -> dict[str, Any]:
        """One page of exchanges: ``{"total", "offset", "rows"}``.

        ``sort`` is a key of :data:`SORTS`; ``time`` is recording order (``seq``: when each
        exchange completed and was stored), ``received`` the time requests arrived. Ties are
        broken by ``seq`` in the same direction. ``filter`` is a filter expression
        (:mod:`pdp_observe.filterlang`); an invalid one raises its ``FilterError``.
        """
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}: use one of {', '.join(SORTS)}")
        offset, limit = max(0, int(offset)), max(0, min(int(limit), PAGE_MAX))
        where, params = self._where(filter)
        conn = self._reader().conn
        direction = "DESC" if desc else "ASC"
        seqs: list[int] | None = None
        if not where:
            lo, hi, contiguous = self._contiguous_span()
            total = max(0, hi - lo + 1) if contiguous else self._total("", [], "")
            if sort == "time" and contiguous:
                if desc:
                    q, bound = "SELECT seq FROM exchanges WHERE seq <= ? ORDER BY seq DESC LIMIT ?", hi - offset
                else:
                    q, bound = "SELECT seq FROM exchanges WHERE seq >= ? ORDER BY seq ASC LIMIT ?", lo + offset
                seqs = [s for (s,) in conn.execute(q, (bound, limit))]
        else:
            total = self._total(where, params, filter.strip())
        if seqs is None:
            col = SORTS[sort]
            order = f"seq {direction}" if col == "seq" else f"{col} {direction}, seq {direction}"
            seqs = [s for (s,) in conn.execute(
                f"SELECT seq FROM exchanges{where} ORDER BY {order} LIMIT ? OFFSET ?", [*params, limit, offset])]
        return {"total": total, "offset": offset, "rows": self._rows(seqs)}

    def after(self, seq: int, limit: int = 500, filter: str = "") -> list[dict[str, Any]]:
        """Exchanges recorded after ``seq``, oldest first (what a reader that polls needs)."""
        where, params = self._where(filter)
        clause = f"{where} AND seq > ?" if where else " WHERE seq > ?"
        seqs = [s for (s,) in self._reader().conn.execute(
            f"SELECT seq FROM exchanges{clause} ORDER BY seq LIMIT ?", [*params, seq, max(0, min(limit, PAGE_MAX))])]
        return self._rows(seqs)

    # ---- one exchange ----------------------------------------------------------------
    def resolve(self, id_or_prefix: str) -> str:
        """Full exchange id; LookupError when none matches, ValueError when not an id or ambiguous."""
        ids = match_ids(self._reader().conn, id_or_prefix)
        if not ids:
            raise LookupError(f"no exchange with id {id_or_prefix!r} in {self.path}")
        if len(ids) > 1:
            raise ValueError(ambiguous_message(id_or_prefix, ids))
        return ids[0]

    def load(self, id_or_prefix: str) -> Exchange:
        """The stored :class:`Exchange` (bodies included), e.g. to replay it."""
        return self._reader().get(self.resolve(id_or_prefix))

    def exchange(self, id_or_prefix: str) -> dict[str, Any]:
        """``show --json`` of one exchange, plus ``seq`` and ``transaction`` (a summary or None)."""
        r = self._reader()
        ex, received = load_exchange(r, self.resolve(id_or_prefix))
        data = exchange_json(ex, received)
        row = r.conn.execute("SELECT seq FROM exchanges WHERE id = ?", (ex.id,)).fetchone()
        data["seq"] = row[0] if row else None
        txn = ex.operation.txn if ex.operation is not None else None
        tx = r.transaction(txn) if txn else None
        data["transaction"] = None if tx is None else {
            "txn": tx["txn"], "outcome": tx["outcome"], "started": tx["started"], "ended": tx["ended"],
            "duration_ms": _r3(tx["duration_ms"]), "query_count": tx["query_count"],
            "exchange_count": len(tx["exchange_ids"]),
            "position": tx["exchange_ids"].index(ex.id) if ex.id in tx["exchange_ids"] else None,
            "error_code": tx["error_code"],
        }
        return data

    # ---- transactions ----------------------------------------------------------------
    def transaction(self, txn: str) -> dict[str, Any]:
        """A transaction (id or unique prefix): its stored row plus its member exchanges.

        Members are in arrival order; each has ``gap_ms``: time from the end of the previous
        member to its own arrival (the transaction held its connection while nothing ran;
        negative when they overlapped; None for the first). ``idle_ms`` sums the positive
        gaps, ``busy_ms`` the members' durations; ``missing`` lists member ids no longer stored.
        """
        r = self._reader()
        tx = r.transaction(txn)
        if tx is None:
            t = (txn or "").strip()
            found = [x for (x,) in r.conn.execute(
                "SELECT txn FROM transactions WHERE txn >= ? AND txn < ? LIMIT 6", (t, t + "\uffff"))] if t else []
            if not found:
                raise LookupError(f"no transaction {txn!r} in {self.path}")
            if len(found) > 1:
                raise ValueError(f"transaction prefix {txn!r} is ambiguous ({', '.join(found[:5])}...)")
            tx = r.transaction(found[0])
            assert tx is not None
        ids = list(dict.fromkeys(tx["exchange_ids"]))
        seqs: set[int] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            seqs.update(s for (s,) in r.conn.execute(
                f"SELECT seq FROM exchanges WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        seqs.update(s for (s,) in r.conn.execute("SELECT seq FROM exchanges WHERE txn = ?", (tx["txn"],)))
        rows = self._rows(sorted(seqs))
        rows.sort(key=lambda x: (x["ts"], x["seq"]))
        prev_end: float | None = None
        idle = busy = 0.0
        for row in rows:
            row["gap_ms"] = None if prev_end is None else round((row["ts"] - prev_end) * 1000.0, 3)
            if row["gap_ms"] is not None and row["gap_ms"] > 0:
                idle += row["gap_ms"]
            busy += row["duration_ms"] or 0.0
            end = row["ts"] + (row["duration_ms"] or 0.0) / 1000.0
            prev_end = end if prev_end is None else max(prev_end, end)
        stored = {row["id"] for row in rows}
        out = dict(tx)
        out["duration_ms"] = _r3(out["duration_ms"])
        out.update(exchanges=rows, idle_ms=round(idle, 3), busy_ms=round(busy, 3),
                   missing=[i for i in ids if i not in stored])
        return out

    # ---- operations ------------------------------------------------------------------
    def operations(self, window_s: float | None = None, filter: str = "", limit: int = 200,
                   until: float | None = None) -> list[dict[str, Any]]:
        """Per operation (fingerprint), like pg_stat_statements, over the last ``window_s``.

        The window ends at ``until`` (default: now); ``window_s=None`` covers everything.
        Each entry: fingerprint, model, action, kind, shape, count, errors (Prisma error code,
        failure or HTTP status >= 400), p50/p95/p99/max/total_ms (nearest-rank percentiles,
        exact, over the exchanges that completed), mean_ms, share (of all time in the window),
        slowest_id; sorted by total_ms, then count. Exchanges without a fingerprint (transaction
        endpoints, health checks, non-Prisma paths) are grouped by kind, model and action.
        """
        until = time.time() if until is None else float(until)
        clauses, params = ["ts <= ?"], [until]
        if window_s is not None:
            clauses.append("ts >= ?")
            params.append(until - float(window_s))
        where, fparams = self._where(filter)
        if where:
            clauses.append(where[len(" WHERE "):])
            params += fparams
        q = (f"SELECT fingerprint, model, action, kind, duration_ms, {_ERROR_SQL}, seq FROM exchanges "
             f"WHERE {' AND '.join(clauses)}")
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for fp, model, action, kind, ms, err, seq in self._reader().conn.execute(q, params):
            key = (fp, None, None, None) if fp else (None, kind, model, action)
            g = groups.get(key)
            if g is None:
                g = groups[key] = [model, action, kind, [], 0, 0, -1.0, seq]
            g[4] += 1
            g[5] += err
            if ms is not None:
                g[3].append(ms)
                if ms > g[6]:
                    g[6], g[7] = ms, seq
        out = []
        grand = 0.0
        for (fp, _k, _m, _a), (model, action, kind, times, count, errors, _mx, seq) in groups.items():
            times.sort()
            total = math.fsum(times)
            grand += total
            out.append({
                "fingerprint": fp, "model": model, "action": action, "kind": kind, "shape": None,
                "count": count, "errors": errors,
                "p50": _r3(_percentile(times, 0.50)), "p95": _r3(_percentile(times, 0.95)),
                "p99": _r3(_percentile(times, 0.99)), "max": _r3(times[-1] if times else None),
                "mean_ms": _r3(total / len(times)) if times else None,
                "total_ms": round(total, 3), "_total": total, "_seq": seq,
            })
        out.sort(key=lambda o: (-o["_total"], -o["count"]))
        out = out[:max(0, int(limit))]
        self._shapes(out)
        for o in out:
            o["share"] = round(o.pop("_total") / grand, 6) if grand > 0 else 0.0
        return out

    def _shapes(self, ops: list[dict[str, Any]]) -> None:
        """Shape and slowest exchange id, read from one record per operation."""
        r = self._reader()
        by_seq = {o["_seq"]: o for o in ops}
        seqs = list(by_seq)
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            for seq, ex_id, rec in r.conn.execute(
                    f"SELECT seq, id, record FROM exchanges WHERE seq IN ({','.join('?' * len(chunk))})", chunk):
                o = by_seq[seq]
                o["slowest_id"] = ex_id
                details = ((orjson.loads(unpack(rec, r._zd)).get("operation") or {}).get("details")) or {}
                o["shape"] = details.get("shape")
        for o in ops:
            o.pop("_seq", None)
            o.setdefault("slowest_id", None)

    # ---- pool ------------------------------------------------------------------------
    def pool(self, since: float, until: float | None = None) -> dict[str, Any]:
        """Engine pool samples and a per-second traffic series from ``since`` to ``until``.

        ``samples``: the scraped engine pool (``--engine-metrics-url``), newest
        ``POOL_SAMPLES_MAX``. ``series``: one entry per second (gaps filled with zeros; at most
        the last ``POOL_SERIES_MAX_S`` seconds): ``t`` (epoch second), ``requests`` and
        ``errors`` that arrived in it, ``max_in_flight``: the most recorded exchanges running
        at once (from arrival times and durations; exchanges that started more than
        ``SWEEP_LOOKBACK_S`` before the window are not counted).
        """
        r = self._reader()
        until = time.time() if until is None else float(until)
        since = float(since)
        rows = r.conn.execute("SELECT data FROM pool_samples WHERE ts >= ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
                              (since, until, POOL_SAMPLES_MAX)).fetchall()
        samples = [orjson.loads(unpack(d, r._zd)) for (d,) in reversed(rows)]
        start = max(since, until - POOL_SERIES_MAX_S)
        first = math.floor(start)
        events: list[tuple[float, int, int]] = []  # (time, +1 start / -1 end, error)
        buckets: dict[int, list[int]] = {}
        for ts, ms, err in r.conn.execute(
                f"SELECT ts, duration_ms, {_ERROR_SQL} FROM exchanges WHERE ts >= ? AND ts <= ?",
                (start - SWEEP_LOOKBACK_S, until)):
            end = ts + (ms or 0.0) / 1000.0
            if end < start:
                continue
            events.append((ts, 1, err))
            events.append((end, -1, 0))
        events.sort(key=lambda e: (e[0], e[1]))  # an end at the same instant as a start comes first
        running = 0
        for t, delta, err in events:
            running += delta
            if delta > 0 and t >= start:
                b = buckets.setdefault(math.floor(t), [0, 0, 0])
                b[0] += 1
                b[1] += err
                b[2] = max(b[2], running)
        series = []
        if buckets or samples:
            last = math.floor(until)
            if buckets:
                first = max(first, min(buckets))
                last = min(last, max(buckets))
            for sec in range(first, last + 1):
                b = buckets.get(sec, (0, 0, 0))
                series.append({"t": sec, "requests": b[0], "errors": b[1], "max_in_flight": b[2]})
        return {"since": since, "until": until, "samples": samples, "series": series}

    # ---- stats -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """What the store holds and what it lost (drops and retention, as ``ls`` notes them)."""
        r = self._reader()
        lo, hi, contiguous = self._contiguous_span()
        count = max(0, hi - lo + 1) if contiguous else self._total("", [], "")
        first, last = r.conn.execute(
            "SELECT (SELECT ts FROM exchanges ORDER BY seq LIMIT 1), (SELECT ts FROM exchanges ORDER BY seq DESC LIMIT 1)"
        ).fetchone()
        counters = r.counters()
        dropped = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dropped.") and v}
        pruned = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("pruned.") and v}
        try:
            size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        except OSError:
            size = None
        return {
            "exchanges": count, "first_ts": first, "last_ts": last,
            "transactions": r.conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0],
            "dropped": dropped, "dropped_total": sum(dropped.values()), "pruned": pruned,
            "summary": drop_summary(counters), "counters": counters, "db_bytes": size,
        }
