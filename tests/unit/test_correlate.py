"""Pressure snapshots: at a P2024/P2028/timeout, who held the pool."""

from __future__ import annotations

from typing import Any

import pytest

from prometheus_client import CollectorRegistry

from pdp_observe.correlate import Correlate, pressure_trigger
from pdp_observe.exchange import Body, Exchange, Operation, Request, Response, Timings
from pdp_observe.metrics import ExchangeMetrics
from pdp_observe.transactions import TransactionTracker


def ex(i: str, received: float, done: float, *, model: str = "User", action: str = "findMany",
       txn: str | None = None, kind: str = "query", code: str | None = None, status: int = 200,
       fingerprint: str | None = None) -> Exchange:
    e = Exchange(id=i, request=Request("POST", "/", [], Body()), timings=Timings(received, received + 0.001,
                                                                                  done - 0.0005, done),
                 response=Response(status, "OK", [], Body()))
    e.operation = Operation(protocol="engine-json", kind=kind, model=model, action=action, txn=txn,
                            error_code=code, fingerprint=fingerprint or (f"fp-{model}-{action}" if model else None))
    return e


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def feed(c: Correlate, tracker: TransactionTracker, batch: list[Exchange]) -> list[Any]:
    for e in batch:
        tracker.feed(e.id, e.timings.received, e.timings.done, e.operation)
    return c(batch)


def test_p2024_snapshot_names_the_open_transaction_and_the_requests_in_flight() -> None:
    tracker = TransactionTracker()
    clock = Clock(1000.0)
    live = [{"received": 1009.0, "method": "POST", "path": "/", "txn": None},   # still running, started before
            {"received": 1013.0, "method": "POST", "path": "/", "txn": None}]   # started after the failure
    c = Correlate(tracker, in_flight=lambda: live, settle=1.0, clock=clock)
    start = ex("tx1", 1000.0, 1000.01, kind="tx_start", model=None, action=None)
    start.operation.txn = "T-1"
    q_in_tx = ex("q1", 1000.02, 1000.03, txn="T-1", model="Post", action="createOne", fingerprint="fp-ins")
    long_query = ex("slow", 1005.0, 1014.0, model="Post", action="findMany")  # overlaps the failure
    before = ex("old", 1001.0, 1002.0)  # done before the failure: not a holder
    assert feed(c, tracker, [start, q_in_tx, before]) == []
    failed = ex("p2024", 1002.0, 1012.0, code="P2024")
    assert pressure_trigger(failed) == "P2024"
    assert feed(c, tracker, [failed]) == []  # waits for the requests still in flight
    clock.t = 1012.5
    assert feed(c, tracker, [long_query]) == []
    clock.t = 1013.5
    [snap] = c.tick()
    d = snap.data
    assert snap.exchange_id == "p2024" and d["trigger"] == "P2024"
    assert [t["txn"] for t in d["open_transactions"]] == ["T-1"]
    tx = d["open_transactions"][0]
    assert tx["age_ms"] == round((failed.timings.first_byte - 1000.0) * 1000, 1) and tx["queries"] == 1
    assert tx["fingerprints"] == ["fp-ins"]
    ids = [h["id"] for h in d["in_flight"]]
    assert "slow" in ids and "old" not in ids and "p2024" not in ids
    live_rows = [h for h in d["in_flight"] if h["id"] is None]
    assert [h["received"] for h in live_rows] == [1009.0]
    assert d["in_flight_count"] == 2
    assert c.tick() == []  # written once


def test_committed_transaction_is_not_a_holder_and_ordinary_errors_take_no_snapshot() -> None:
    tracker = TransactionTracker()
    clock = Clock(0.0)
    c = Correlate(tracker, settle=0.0, clock=clock)
    start = ex("s", 10.0, 10.01, kind="tx_start", model=None, action=None)
    start.operation.txn = "T-2"
    commit = ex("c", 10.5, 10.6, kind="tx_commit", txn="T-2", model=None, action=None)
    feed(c, tracker, [start, commit])
    assert feed(c, tracker, [ex("dup", 11.0, 11.1, code="P2002")]) == []
    clock.t = 100.0
    out = feed(c, tracker, [ex("t", 11.0, 12.0, code="P2028")])
    assert len(out) == 1 and out[0].data["open_transactions"] == []


def test_metric_labels_stay_bounded_with_10000_distinct_fingerprints_and_models() -> None:
    registry = CollectorRegistry()
    m = ExchangeMetrics(registry)
    batch = [ex(f"{i:016x}", 1.0, 1.01, model=f"Model{i % 5000}", fingerprint=f"fp{i}") for i in range(10000)]
    batch += [ex("bad", 1.0, 1.01, model="drop table; --", action="x" * 300)]
    m.handle(batch)
    label_sets = {tuple(sorted(s.labels.items())) for fam in registry.collect() for s in fam.samples}
    models = {dict(ls).get("model") for ls in label_sets} - {None}
    assert len(models) <= m.model.limit + 1 and "other" in models
    assert not any("fp" in v for ls in label_sets for _, v in ls)  # fingerprints are never labels
    total = sum(s.value for fam in registry.collect() if fam.name == "pdp_prisma_operations"
                for s in fam.samples if s.name.endswith("_total"))
    assert total == 10001  # bounded labels, nothing lost


def test_a_batch_moves_every_series_exactly_as_one_exchange_at_a_time() -> None:
    """The worker applies counts and histogram observations once per series and batch; the
    scrape must not be able to tell (bucket edges, sums, counts, exemplars)."""
    from prometheus_client import generate_latest

    def batch() -> list[Exchange]:
        out = []
        for i in range(300):
            e = ex(f"{i:016x}", 100.0, 100.0 + [0.0002, 0.0005, 0.001, 0.0049, 0.25, 7.0, 80.0][i % 7],
                   model=("User", "Post")[i % 2], status=(200, 500)[i % 5 == 0], code="P2002" if i % 5 == 0 else None)
            e.request.body.size, e.response.body.size = i, 2 * i
            if i % 50 == 0:
                e.trace_id = f"{i:032x}"
            out.append(e)
        return out

    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    m1 = ExchangeMetrics(one_by_one)
    for e in batch():
        m1.handle([e])
    ExchangeMetrics(batched).handle(batch())

    def scrape(reg: CollectorRegistry) -> dict[str, float]:
        lines = [line.rsplit(" ", 1) for line in generate_latest(reg).decode().splitlines() if not line.startswith("#")]
        return {series: float(value) for series, value in lines}

    def exemplars(reg: CollectorRegistry) -> dict[str, str]:
        from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
        out = {}
        for line in openmetrics(reg).decode().splitlines():
            if " # " in line:  # bucket ... # {labels} value timestamp: the timestamp differs
                series, ex = line.split(" # ")
                out[series.rsplit(" ", 1)[0]] = ex.rsplit(" ", 1)[0]
        return out

    assert exemplars(batched) == exemplars(one_by_one) and len(exemplars(batched)) >= 4
    got, want = scrape(batched), scrape(one_by_one)
    assert got == pytest.approx(want, rel=1e-12)  # sums may round differently in the last bit
    assert got['pdp_request_duration_ms_bucket{action="findMany",le="0.25",model="User"}'] == 22  # i % 14 == 0: 0.2 ms
    assert got['pdp_request_duration_ms_count{action="findMany",model="Post"}'] == 150
