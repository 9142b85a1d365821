"""The sidecar's own Prometheus metrics, on an injected registry (never the global one).

Counts are read from the recorder at scrape time by a custom collector, so the request path
and the worker keep plain ints and there is one source of truth for "what was dropped".
Per-exchange series are updated by the worker, a batch at a time, off the request path.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class ExchangeMetrics:
    """A sink: per-exchange counters and histograms, label values from bounded sets only."""

    name = "metrics"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("pdp_requests", "Exchanges seen on the hop",
                                ["method", "status", "failure"], registry=registry)
        self.duration = Histogram("pdp_request_duration_ms", "Total time on the hop (ms)",
                                  buckets=DURATION_BUCKETS_MS, registry=registry)
        self.bytes = Counter("pdp_body_bytes", "Body bytes forwarded", ["direction"], registry=registry)

    def handle(self, exchanges: list[Exchange]) -> None:
        for ex in exchanges:
            method = ex.request.method if ex.request.method in _METHODS else "OTHER"
            status = str(ex.status) if ex.status is not None else "none"
            self.requests.labels(method, status, ex.failure or "").inc()
            if (ms := ex.timings.duration_ms) is not None:
                self.duration.observe(ms)
            self.bytes.labels("request").inc(ex.request.body.size)
            if ex.response is not None:
                self.bytes.labels("response").inc(ex.response.body.size)
