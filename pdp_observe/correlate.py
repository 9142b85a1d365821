"""Join each exchange with what the engine said and what the pool looked like.

A processor of the capture worker (after decoding): it parses the engine's telemetry from
the response the upstream sent (spans, SQL with timings), joins the engine's pool samples
at the exchange's start and end (when ``--engine-metrics-url`` is scraped), derives pool
pressure from the hop itself (what Prisma 7 leaves a self-hoster: in-flight requests, open
transactions, high-water mark, time queued before the engine started) and, at a
P2024 / P2028 / P6000 / timeout, takes a **pressure snapshot**: which requests were in
flight and which transactions were open at that instant — who held the pool.

The snapshot waits ``settle`` seconds before it is written: requests still in flight at the
failure's instant complete later, and only then is everything about them known.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .engine.telemetry import parse_telemetry
from .exchange import Exchange, SqlStatement
from .transactions import Outcome, TransactionTracker

PRESSURE_CODES = frozenset({"P2024", "P2028", "P6000", "P6004", "P5009", "P1008"})
PRESSURE_FAILURES = frozenset({"upstream_read_timeout", "upstream_connect_timeout"})
_PRESSURE_STATUSES = frozenset({408, 504})
SNAPSHOT_LIST_MAX = 200  # most requests / transactions named in one snapshot

InFlight = Callable[[], "list[dict[str, Any]]"]
"""Requests being forwarded now: dicts with received, method, path, txn (see Proxy.in_flight_list)."""


@dataclass(slots=True)
class PressureSnapshot:
    """Stored beside the exchange that hit the limit (table ``pressure``)."""

    exchange_id: str
    at: float
    trigger: str
    data: dict[str, Any] = field(default_factory=dict)
    store_kind: ClassVar[str] = "pressure"


@dataclass(slots=True)
class _Seen:
    """What a completed exchange contributes to later snapshots (kept for ``window`` s)."""

    id: str
    received: float
    done: float
    method: str
    path: str
    model: str | None
    action: str | None
    fingerprint: str | None
    txn: str | None


def pressure_trigger(ex: Exchange) -> str | None:
    """Why this exchange deserves a pressure snapshot (an error code or a timeout), or None."""
    op = ex.operation
    if op is not None and op.error_code in PRESSURE_CODES:
        return op.error_code
    if ex.failure in PRESSURE_FAILURES:
        return ex.failure
    if ex.status in _PRESSURE_STATUSES:
        return f"http_{ex.status}"
    return None


def merge_sql(ex: Exchange, timings: list[dict[str, Any]]) -> None:
    """Give the operation the engine's SQL timings: matched to the plan's statements by text
    (Prisma 7 plans carry SQL), or as the statement list itself (engines send none)."""
    op = ex.operation
    if op is None or not timings:
        return
    if not op.sql:
        op.sql = [SqlStatement(sql=t["sql"], param_count=t.get("param_count") or 0,
                               duration_ms=t.get("ms")) for t in timings]
        return
    pending: dict[str, list[float | None]] = {}
    for t in timings:
        pending.setdefault(_norm(t["sql"]), []).append(t.get("ms"))
    for stmt in op.sql:
        got = pending.get(_norm(stmt.sql))
        if got:
            stmt.duration_ms = got.pop(0)


def _norm(sql: str) -> str:
    return " ".join(sql.split())


class Correlate:
    """The processor: telemetry, pool join, derived pressure, pressure snapshots."""

    name = "correlate"

    def __init__(self, tracker: TransactionTracker, *, pool_at: Callable[[float], Any] | None = None,
                 in_flight: InFlight | None = None, high_water: Callable[[], int] | None = None,
                 settle: float = 1.0, window: float = 120.0, clock: Callable[[], float] = time.time) -> None:
        self.tracker = tracker
        self.pool_at = pool_at
        self.in_flight = in_flight
        self.high_water = high_water
        self.settle = settle
        self.window = window
        self.clock = clock
        self._recent: deque[_Seen] = deque()
        self._pending: list[tuple[PressureSnapshot, Exchange]] = []
        self.snapshots = 0
        self.telemetry_parsed = 0
        self.open_transactions = 0
        self._starts: list[float] = []
        self._ends: list[float] = []

    def __call__(self, exchanges: list[Exchange]) -> list[Any]:
        if exchanges:
            self.open_transactions = sum(1 for tx in self.tracker.open.values() if tx.outcome == Outcome.OPEN)
            # transactions open at an instant = started by then − ended by then (bisect per exchange)
            txs = [tx for tx in self.tracker.open.values() if tx.started is not None]
            self._starts = sorted(tx.started for tx in txs)
            self._ends = sorted(tx.ended for tx in txs if tx.ended is not None)
        for ex in exchanges:
            self._telemetry(ex)
            self._pool(ex)
            op = ex.operation
            rs_done = ex.timings.done or ex.timings.received
            self._recent.append(_Seen(ex.id, ex.timings.received, rs_done, ex.request.method,
                                      ex.request.path, op.model if op else None,
                                      op.action if op else None, op.fingerprint if op else None,
                                      op.txn if op else None))
            if (trigger := pressure_trigger(ex)) is not None:
                self._begin_snapshot(ex, trigger)
        return self.tick()

    def tick(self) -> list[Any]:
        """Finish the snapshots whose instant is ``settle`` seconds old; forget old exchanges."""
        now = self.clock()
        while self._recent and self._recent[0].done < now - self.window:
            self._recent.popleft()
        if not self._pending:
            return []
        due = [p for p in self._pending if p[0].at + self.settle <= now]
        if not due:
            return []
        self._pending = [p for p in self._pending if p[0].at + self.settle > now]
        active = self.in_flight() if self.in_flight is not None else []
        for snap, ex in due:
            self._finish_snapshot(snap, ex, active)
        return [snap for snap, _ in due]

    # ---- per exchange ------------------------------------------------------------------
    def _telemetry(self, ex: Exchange) -> None:
        rs = ex.response
        if rs is None or not rs.body.data or b'"extensions"' not in rs.body.data:
            return
        parsed = parse_telemetry(rs.body.data)
        if parsed is None:
            return
        self.telemetry_parsed += 1
        eng = parsed.to_dict()
        ex.telemetry = {**(ex.telemetry or {}), "engine": eng}
        merge_sql(ex, eng.get("sql") or [])

    def _pool(self, ex: Exchange) -> None:
        t = ex.timings
        pool: dict[str, Any] = dict(ex.pool or {})
        at = t.received
        pool["open_transactions"] = bisect_right(self._starts, at) - bisect_right(self._ends, at)
        if self.high_water is not None:
            pool["high_water"] = self.high_water()
        eng_ms = ex.engine_ms
        if t.upstream_connected is not None and t.first_byte is not None:
            upstream_ms = (t.first_byte - t.upstream_connected) * 1000.0
            pool["upstream_ms"] = round(upstream_ms, 3)
            if eng_ms is not None:
                # time on the upstream not covered by the engine's own spans: its HTTP queue
                pool["queued_ms"] = round(max(0.0, upstream_ms - eng_ms), 3)
        wait = _connection_wait_ms(ex)
        if wait is not None:
            pool["engine_connection_ms"] = round(wait, 3)
        if self.pool_at is not None:
            start, end = self.pool_at(t.received), self.pool_at(t.done or t.received)
            pool["engine_start"] = start.to_dict() if start is not None else None
            pool["engine_end"] = end.to_dict() if end is not None else None
        ex.pool = pool

    # ---- pressure snapshots ------------------------------------------------------------
    def _begin_snapshot(self, ex: Exchange, trigger: str) -> None:
        t = ex.timings
        at = t.first_byte or t.done or t.received
        open_txns = []
        for tx in self.tracker.open.values():
            if tx.started is None or tx.started > at or (tx.ended is not None and tx.ended <= at):
                continue
            if tx.txn and ex.operation is not None and tx.txn == ex.operation.txn and trigger == "P2028":
                pass  # the expired transaction itself is named too: it is what timed out
            open_txns.append({
                "txn": tx.txn, "started": tx.started, "age_ms": round((at - tx.started) * 1000.0, 1),
                "queries": tx.query_count, "exchange_ids": tx.exchange_ids[-20:],
                "isolation_level": tx.isolation_level, "start_seen": tx.start_seen,
            })
        open_txns.sort(key=lambda x: x["started"])
        snap = PressureSnapshot(ex.id, at, trigger, {
            "at": at, "trigger": trigger, "open_transactions": open_txns[:SNAPSHOT_LIST_MAX],
            "open_transaction_count": len(open_txns),
        })
        if self.pool_at is not None and (sample := self.pool_at(at)) is not None:
            snap.data["engine_pool"] = sample.to_dict()
        self._pending.append((snap, ex))
        self.snapshots += 1

    def _finish_snapshot(self, snap: PressureSnapshot, ex: Exchange, active: list[dict[str, Any]]) -> None:
        at = snap.at
        holders: dict[str, dict[str, Any]] = {}
        fp_by_id: dict[str, str | None] = {}
        for s in self._recent:
            fp_by_id[s.id] = s.fingerprint
            if s.id != ex.id and s.received <= at < s.done:
                holders[s.id] = {"id": s.id, "received": s.received, "age_ms": round((at - s.received) * 1000.0, 1),
                                 "method": s.method, "path": s.path, "model": s.model, "action": s.action,
                                 "fingerprint": s.fingerprint, "txn": s.txn, "completed": s.done}
        for a in active:
            if a["received"] <= at:
                key = f"live:{a['received']}:{a['path']}"
                holders[key] = {"id": None, "received": a["received"],
                                "age_ms": round((at - a["received"]) * 1000.0, 1), "method": a["method"],
                                "path": a["path"], "model": None, "action": None, "fingerprint": None,
                                "txn": a.get("txn"), "completed": None}
        in_flight = sorted(holders.values(), key=lambda h: h["received"])
        for tx in snap.data["open_transactions"]:
            tx["fingerprints"] = [fp for i in tx["exchange_ids"] if (fp := fp_by_id.get(i))]
        snap.data["in_flight"] = in_flight[:SNAPSHOT_LIST_MAX]
        snap.data["in_flight_count"] = len(in_flight)
        ex.pressure = snap.data


def _connection_wait_ms(ex: Exchange) -> float | None:
    """Time the engine spent getting a connection (its ``prisma:engine:connection`` spans)."""
    eng = (ex.telemetry or {}).get("engine") or {}
    total = None
    for s in eng.get("spans") or ():
        if s.get("name") in ("prisma:engine:connection", "prisma:accelerate:connection"):
            total = (total or 0.0) + max(0.0, (s["end"] - s["start"]) * 1000.0)
    return total
