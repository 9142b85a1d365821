"""The sidecar's own traces: one server span per exchange, the engine's spans as its children.

Spans are built after the fact, in the capture worker, from what the hot path noted (ids and
timestamps) — the request path never touches the OpenTelemetry SDK. The SDK's
:class:`ReadableSpan` takes explicit ids and times, so the server span carries the id the
upstream already saw in ``traceparent``, and each engine span keeps its real start and end:
a trace backend shows client → sidecar → engine → each SQL statement as one waterfall.

Export goes through a batch span processor (OTLP/HTTP when the standard
``OTEL_EXPORTER_OTLP_*`` variables are set); failures are counted, never raised.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import __version__
from .exchange import Exchange
from .tracecontext import new_span_id

log = logging.getLogger("pdp_observe.tracing")

_SCOPE = InstrumentationScope("pdp_observe", __version__)
_HEX16 = re.compile(r"[0-9a-f]{16}")
_KINDS = {"client": SpanKind.CLIENT, "server": SpanKind.SERVER, "producer": SpanKind.PRODUCER,
          "consumer": SpanKind.CONSUMER}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class CountingExporter(SpanExporter):
    """Wraps an exporter so that its failures become counts (``pdp_trace_export`` metrics)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.last_error: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - a collector's trouble is counted, not raised
            result, self.last_error = SpanExportResult.FAILURE, repr(exc)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def otlp_processor_from_env(env: dict[str, str] | None = None) -> tuple[SpanProcessor, CountingExporter] | None:
    """A batch processor exporting over OTLP/HTTP when the standard OTel variables ask for it."""
    env = os.environ if env is None else env
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    exporter = CountingExporter(OTLPSpanExporter())
    return BatchSpanProcessor(exporter), exporter


def _ctx(trace_id: int, span_id: str) -> SpanContext:
    return SpanContext(trace_id, int(span_id, 16), is_remote=False, trace_flags=_SAMPLED)


def _ns(t: float) -> int:
    """Epoch seconds (a float keeps ~0.2 µs at today's epoch) → ns, rounded to the µs."""
    return round(t * 1e6) * 1000


def _attr_value(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, bool, int, float)) for x in v):
        return list(v)
    return str(v)


def server_span_attributes(ex: Exchange) -> dict[str, Any]:
    """HTTP server semantic conventions plus what the decoder learnt about the operation."""
    rq, rs, op = ex.request, ex.response, ex.operation
    path, _, query = rq.path.partition("?")
    attrs: dict[str, Any] = {
        "http.request.method": rq.method, "url.path": path, "url.scheme": "http",
        "network.protocol.version": rq.http_version, "http.request.body.size": rq.body.size,
        "pdp.exchange_id": ex.id,
    }
    if query:
        attrs["url.query"] = query  # already redacted
    if ex.client:
        host, _, port = ex.client.rpartition(":")
        attrs["client.address"] = host or ex.client
    if ex.upstream:
        attrs["server.address"] = ex.upstream
    if rs is not None:
        attrs["http.response.status_code"] = rs.status
        attrs["http.response.body.size"] = rs.body.size
    if ex.failure:
        attrs["error.type"] = ex.failure
    if op is not None:
        for key, value in (("prisma.protocol", op.protocol), ("prisma.kind", op.kind),
                           ("prisma.model", op.model), ("prisma.action", op.action),
                           ("prisma.fingerprint", op.fingerprint), ("prisma.txn", op.txn),
                           ("prisma.error_code", op.error_code)):
            if value:
                attrs[key] = value
        if op.error_code and "error.type" not in attrs:
            attrs["error.type"] = op.error_code
    system = _db_system(ex)
    if system:
        attrs["db.system"] = system
    if (ms := ex.engine_ms) is not None:
        attrs["prisma.engine_ms"] = ms
    return attrs


def _db_system(ex: Exchange) -> str | None:
    eng = (ex.telemetry or {}).get("engine") or {}
    for s in eng.get("spans") or ():
        a = s.get("attributes") or {}
        if v := (a.get("db.system") or a.get("db.system.name")):
            return str(v)
    return None


def span_name(ex: Exchange) -> str:
    op = ex.operation
    if op is not None and op.action:
        return f"prisma {op.model}.{op.action}" if op.model else f"prisma {op.action}"
    if op is not None and op.kind not in (None, "other"):
        return f"prisma {op.kind}"
    return f"{ex.request.method} {ex.request.path.partition('?')[0]}"


def exchange_spans(ex: Exchange, resource: Resource) -> list[ReadableSpan]:
    """The server span of one exchange and its engine spans, ready for a span processor."""
    if not ex.trace_id or not ex.span_id or ex.timings.done is None:
        return []
    trace_id = int(ex.trace_id, 16)
    server_ctx = _ctx(trace_id, ex.span_id)
    parent = (SpanContext(trace_id, int(ex.parent_span_id, 16), is_remote=True, trace_flags=_SAMPLED)
              if ex.parent_span_id else None)
    failed = bool(ex.failure) or (ex.status is not None and ex.status >= 500) or bool(
        ex.operation and ex.operation.error_code)
    status = Status(StatusCode.ERROR, ex.failure or (ex.operation.error_code if ex.operation else None)
                    or f"HTTP {ex.status}") if failed else Status(StatusCode.UNSET)
    spans = [ReadableSpan(
        span_name(ex), context=server_ctx, parent=parent, resource=resource,
        attributes=server_span_attributes(ex), kind=SpanKind.SERVER, status=status,
        start_time=_ns(ex.timings.received), end_time=_ns(ex.timings.done), instrumentation_scope=_SCOPE,
    )]
    eng = (ex.telemetry or {}).get("engine") or {}
    engine_spans = eng.get("spans") or []
    if not engine_spans:
        return spans
    # Engine ids become OTel ids: real 16-hex ids (≤ 6.0 engines) are kept, sequential (6.1+)
    # and all-zero (the Prisma 7 executor without a tracer) ones get fresh ids.
    ids: dict[str, str] = {}
    for s in engine_spans:
        sid = str(s.get("id") or "")
        if sid in ids:
            continue
        ids[sid] = sid if (_HEX16.fullmatch(sid) and sid != "0" * 16) else new_span_id()
    for s in engine_spans:
        sid = str(s.get("id") or "")
        pid = s.get("parent_id")
        parent_id = ids.get(str(pid)) if pid is not None and str(pid) != sid else None
        if parent_id is None or parent_id == ids[sid]:
            parent_id = ex.span_id
        attrs = {k: _attr_value(v) for k, v in (s.get("attributes") or {}).items() if v is not None}
        spans.append(ReadableSpan(
            str(s.get("name") or "engine"), context=_ctx(trace_id, ids[sid]),
            parent=_ctx(trace_id, parent_id), resource=resource, attributes=attrs,
            kind=_KINDS.get(str(s.get("kind")), SpanKind.INTERNAL),
            start_time=_ns(float(s["start"])), end_time=_ns(float(s["end"])), instrumentation_scope=_SCOPE,
        ))
    return spans


class SpanEmitter:
    """A sink: hands each exchange's spans to the span processor (batching, export)."""

    name = "traces"

    def __init__(self, processor: SpanProcessor, *, service_name: str = "pdp-observe",
                 exporter: CountingExporter | None = None) -> None:
        self.processor = processor
        self.exporter = exporter
        self.resource = Resource.create({"service.name": service_name})
        self.emitted = 0

    def handle(self, exchanges: list[Exchange]) -> None:
        for ex in exchanges:
            for span in exchange_spans(ex, self.resource):
                self.processor.on_end(span)
                self.emitted += 1

    def shutdown(self) -> None:
        try:
            self.processor.shutdown()
        except Exception as exc:  # noqa: BLE001
            log.warning("span export shutdown failed: %r", exc)
