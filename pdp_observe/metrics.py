"""The sidecar's own Prometheus metrics, on an injected registry (never the global one).

Counts are read from the recorder at scrape time by a custom collector, so the request path
and the worker keep plain ints and there is one source of truth for "what was dropped".
Per-exchange series are updated by the worker, a batch at a time, off the request path.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from .correlate import Correlate, pressure_trigger
from .exchange import Exchange
from .hub import Recorder

# `*_created` series double every counter's series count and no dashboard of ours reads them.
disable_created_metrics()

# Prisma's own histogram bounds (ms) plus finer ones below 10 ms where the proxy lives.
DURATION_BUCKETS_MS = (0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class RecorderCollector(Collector):
    """Exports the recorder's counters (drops by reason, stored, queue depth, pruning)."""

    def __init__(self, recorder: Recorder, in_flight: "callable[[], int] | None" = None) -> None:  # type: ignore[valid-type]
        self.recorder = recorder
        self.in_flight = in_flight

    def collect(self) -> Iterable[Metric]:
        r = self.recorder
        dropped = CounterMetricFamily("pdp_captures_dropped", "Captures dropped instead of "
                                      "delaying traffic, by reason", labels=["reason"])
        for reason in sorted({"queue_full", "disk_full", "locked", "read_only", "write_error",
                              "process_error"} | set(r.dropped())):
            dropped.add_metric([reason], r.dropped().get(reason, 0))
        yield dropped
        yield CounterMetricFamily("pdp_captures_stored", "Exchanges written to the capture store",
                                  value=r.stored)
        yield GaugeMetricFamily("pdp_capture_queue_depth", "Captures waiting for the worker",
                                value=r.queue_depth)
        yield CounterMetricFamily("pdp_captures_decode_deferred", "Exchanges stored before being "
                                  "decoded because the worker was behind (decoded once it caught up)",
                                  value=r.decode_deferred)
        yield CounterMetricFamily("pdp_captures_undecoded", "Exchanges stored but never decoded "
                                  "(deferred past the backlog limit, or their late decode failed)",
                                  value=r.undecoded)
        pruned = CounterMetricFamily("pdp_store_pruned", "Captures removed by retention",
                                     labels=["reason"])
        for reason, n in sorted(r.pruned.items()):
            pruned.add_metric([reason], n)
        yield pruned
        sink_err = CounterMetricFamily("pdp_sink_errors", "Batches a sink failed on", labels=["sink"])
        for name, n in sorted(r.sink_errors.items()):
            sink_err.add_metric([name], n)
        yield sink_err
        if self.in_flight is not None:
            yield GaugeMetricFamily("pdp_requests_in_flight", "Requests being forwarded now",
                                    value=self.in_flight())


class CorrelationCollector(Collector):
    """Gauges read at scrape time from the correlation side: open transactions, high-water
    mark, snapshots taken, span export and OTLP receiver health."""

    def __init__(self, correlate: Correlate, *, high_water: "Callable[[], int] | None" = None,
                 exporter: Any = None, receiver: Any = None, forwarder: Any = None) -> None:
        self.correlate = correlate
        self.high_water = high_water
        self.exporter = exporter
        self.receiver = receiver
        self.forwarder = forwarder

    def collect(self) -> Iterable[Metric]:
        c = self.correlate
        yield GaugeMetricFamily("pdp_transactions_open", "Interactive transactions open now (seen "
                                "started, not yet ended)", value=c.open_transactions)
        if self.high_water is not None:
            yield GaugeMetricFamily("pdp_requests_in_flight_high_water", "Most requests in flight "
                                    "at once since the sidecar started", value=self.high_water())
        yield CounterMetricFamily("pdp_pressure_snapshots", "Pressure snapshots taken (who held "
                                  "the pool at a P2024/P2028/P6000/timeout)", value=c.snapshots)
        yield CounterMetricFamily("pdp_engine_telemetry_parsed", "Responses whose engine telemetry "
                                  "was parsed", value=c.telemetry_parsed)
        if self.exporter is not None:
            spans = CounterMetricFamily("pdp_trace_export_spans", "Spans handed to the OTLP exporter, "
                                        "by result", labels=["result"])
            spans.add_metric(["ok"], self.exporter.exported)
            spans.add_metric(["failed"], self.exporter.failed)
            yield spans
        if self.receiver is not None:
            st = self.receiver.stats
            yield CounterMetricFamily("pdp_otlp_received_spans", "Spans received on /v1/traces",
                                      value=st.get("spans", 0))
            rejected = CounterMetricFamily("pdp_otlp_rejected_requests", "OTLP requests refused, by "
                                           "reason", labels=["reason"])
            for reason, n in sorted((st.get("rejected") or {}).items()):
                rejected.add_metric([reason], n)
            yield rejected
        if self.forwarder is not None:
            fw = CounterMetricFamily("pdp_otlp_forwarded_requests", "OTLP requests forwarded to the "
                                     "collector, by result", labels=["result"])
            for key in ("sent", "failed", "dropped"):
                fw.add_metric([key], self.forwarder.stats.get(key, 0))
            yield fw


class BoundedLabel:
    """Label values from what the wire says, capped: the first ``limit`` distinct values that
    look like Prisma identifiers are kept, anything else is ``other``. Model and action names
    come from the schema, so a real app stays far below the cap; a client sending free text
    (or a bug) cannot explode the series count."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit or not _IDENT.fullmatch(value):
            return "other"
        self.seen.add(value)
        return value


_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}")
_CODE = re.compile(r"P\d{4}")


def _observe(pending: dict[Any, tuple[list[float], list[Any]]], hist: Any, value: float,
             exemplar: dict[str, str] | None) -> None:
    found = pending.get(hist)
    if found is None:
        pending[hist] = ([value], [exemplar])
    else:
        found[0].append(value)
        found[1].append(exemplar)


def observe_many(hist: Any, values: list[float], exemplars: list[dict[str, str] | None] | None = None) -> None:
    """``hist.observe(v, exemplar)`` for each value, as one increment per bucket and one on the
    sum; a bucket keeps the last exemplar that fell in it, as one observe at a time would.

    Reads prometheus_client's per-series fields (``_upper_bounds``, ``_buckets``, ``_sum``:
    unchanged since its first Histogram); a version without them gets the plain loop.
    """
    exemplars = exemplars or [None] * len(values)
    bounds, buckets, total = (getattr(hist, "_upper_bounds", None), getattr(hist, "_buckets", None),
                              getattr(hist, "_sum", None))
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v, ex in zip(values, exemplars):
            hist.observe(v, ex)
        return
    per = [0] * len(bounds)
    last: dict[int, tuple[dict[str, str], float]] = {}
    for v, ex in zip(values, exemplars):
        if v == v:  # NaN counts in the sum only, as observe() does
            i = bisect_left(bounds, v)
            per[i] += 1
            if ex:
                last[i] = (ex, v)
    for i, n in enumerate(per):
        if n:
            buckets[i].inc(n)
    total.inc(sum(values))
    if last:
        now = time.time()
        for i, (ex, v) in last.items():
            buckets[i].set_exemplar(Exemplar(ex, v, now))


class ExchangeMetrics:
    """A sink: per-exchange counters and histograms, label values from bounded sets only.

    Histograms carry OpenMetrics exemplars (trace id, exchange id) so a latency spike on a
    dashboard links to the trace and to ``pdp-observe show <id>``.
    """

    name = "metrics"

    def __init__(self, registry: CollectorRegistry, *, tracker: Any = None,
                 model_limit: int = 200, action_limit: int = 64) -> None:
        self.tracker = tracker
        self.model = BoundedLabel(model_limit)
        self.action = BoundedLabel(action_limit)
        self.requests = Counter("pdp_requests", "Exchanges seen on the hop",
                                ["method", "status", "failure"], registry=registry)
        self.operations = Counter("pdp_prisma_operations", "Prisma operations seen on the hop, by "
                                  "model, action, HTTP status and Prisma error code",
                                  ["model", "action", "status", "code"], registry=registry)
        self.duration = Histogram("pdp_request_duration_ms", "Total time on the hop (ms)",
                                  ["model", "action"], buckets=DURATION_BUCKETS_MS, registry=registry)
        self.upstream = Histogram("pdp_upstream_duration_ms", "Time from the upstream connection to "
                                  "its first response byte (ms)", buckets=DURATION_BUCKETS_MS,
                                  registry=registry)
        self.engine = Histogram("pdp_engine_duration_ms", "Time the engine says it spent (its root "
                                "span, ms)", buckets=DURATION_BUCKETS_MS, registry=registry)
        self.sql = Histogram("pdp_sql_duration_ms", "SQL statement durations the engine reported (ms)",
                             buckets=DURATION_BUCKETS_MS, registry=registry)
        self.bytes = Counter("pdp_body_bytes", "Body bytes forwarded", ["direction"], registry=registry)
        self.tx_ended = Counter("pdp_transactions_ended", "Interactive transactions that ended, by "
                                "outcome", ["outcome"], registry=registry)
        self.tx_duration = Histogram("pdp_transaction_duration_ms", "Interactive transaction "
                                     "duration, start to end (ms)", buckets=DURATION_BUCKETS_MS,
                                     registry=registry)
        self.pressure = Counter("pdp_pressure_events", "Exchanges that hit a pool/transaction limit "
                                "(P2024, P2028, P6000, timeouts)", ["trigger"], registry=registry)
        self._tx_counted: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, memoised: prometheus_client validates and locks on every
        call (~0.6 µs), five times per exchange; the label sets are few and never removed."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def handle(self, exchanges: list[Exchange]) -> None:
        """Counts and observations are summed over the batch and applied once per series:
        prometheus_client takes a lock per ``inc``/``observe`` (~6 µs per exchange before)."""
        child = self._child
        counts: dict[Any, float] = {}
        observed: dict[Any, tuple[list[float], list[Any]]] = {}
        for ex in exchanges:
            method = ex.request.method if ex.request.method in _METHODS else "OTHER"
            status = str(ex.status) if ex.status is not None else "none"
            c = child(self.requests, method, status, ex.failure or "")
            counts[c] = counts.get(c, 0) + 1
            op = ex.operation
            model = self.model(op.model) if op else ""
            action = self.action(op.action or (op.kind if op.kind not in (None, "other") else None)) if op else ""
            code = (op.error_code if _CODE.fullmatch(op.error_code) else "other") if op and op.error_code else ""
            c = child(self.operations, model, action, status, code)
            counts[c] = counts.get(c, 0) + 1
            exemplar = {"trace_id": ex.trace_id, "exchange_id": ex.id} if ex.trace_id else None
            t = ex.timings
            if (ms := t.duration_ms) is not None:
                _observe(observed, child(self.duration, model, action), ms, exemplar)
            if t.upstream_connected is not None and t.first_byte is not None:
                _observe(observed, self.upstream, (t.first_byte - t.upstream_connected) * 1000.0, exemplar)
            if (eng := ex.engine_ms) is not None:
                _observe(observed, self.engine, eng, exemplar)
            for st in ex.sql_timings:
                if st["ms"] is not None:
                    _observe(observed, self.sql, st["ms"], None)
            c = child(self.bytes, "request")
            counts[c] = counts.get(c, 0) + ex.request.body.size
            if ex.response is not None:
                c = child(self.bytes, "response")
                counts[c] = counts.get(c, 0) + ex.response.body.size
            if op is not None and op.txn and self.tracker is not None:
                self._transaction(op.txn)
            if (trigger := pressure_trigger(ex)) is not None:
                self.pressure.labels(trigger).inc()
        for c, n in counts.items():
            if n:
                c.inc(n)
        for h, (values, exemplars) in observed.items():
            observe_many(h, values, exemplars)

    def _transaction(self, txn: str) -> None:
        tx = self.tracker.open.get(txn)
        if tx is None or tx.outcome == "open" or txn in self._tx_counted:
            return
        if len(self._tx_counted) > 100000:
            self._tx_counted.clear()
        self._tx_counted.add(txn)
        self.tx_ended.labels(tx.outcome).inc()
        if tx.duration_ms is not None:
            self.tx_duration.observe(tx.duration_ms)
