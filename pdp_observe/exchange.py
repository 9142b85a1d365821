"""The one record every part of pdp_observe speaks: an :class:`Exchange`.

A source (the inline proxy today; pcap/HAR import later) produces exchanges, the pipeline
enriches them (decoded Prisma :class:`Operation`, engine telemetry, pool snapshot), and every
sink (the SQLite store, metrics, the live feed) and reader (CLI, TUI, export, replay) consumes
them. Keeping one definition here means a field added for a later capability is visible to
all of them at once, and ``to_json``/``from_json`` give one stable serialisation.

The hot path never builds these objects: it fills a cheap :class:`RawCapture`, and the capture
worker turns that into an :class:`Exchange` off the request path.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[str, str]]
"""Header pairs in wire order, original case, duplicates kept."""


class Failure:
    """What went wrong with an exchange (``Exchange.failure``); ``None`` means nothing did.

    Plain string constants (not an Enum) because they are stored, filtered on and printed
    as text, and ``--json`` output must keep them stable.
    """

    UPSTREAM_REFUSED = "upstream_refused"
    UPSTREAM_CONNECT_TIMEOUT = "upstream_connect_timeout"
    UPSTREAM_READ_TIMEOUT = "upstream_read_timeout"
    UPSTREAM_RESET = "upstream_reset"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_ABORT = "client_abort"

    ALL = (
        UPSTREAM_REFUSED,
        UPSTREAM_CONNECT_TIMEOUT,
        UPSTREAM_READ_TIMEOUT,
        UPSTREAM_RESET,
        UPSTREAM_ERROR,
        CLIENT_ABORT,
    )


@dataclass(slots=True)
class Body:
    """A captured body: at most ``--capture-body-limit`` bytes of it, plus facts about all of it.

    ``data`` is what is stored (content-decoded and redacted when it went through the
    capture worker); ``size`` and ``sha256`` describe the full body exactly as it crossed the
    wire, so a user can tell a 1 GB response from its 1 MiB prefix.
    """

    data: bytes = b""
    size: int = 0
    sha256: str = ""
    truncated: bool = False
    encoding: str | None = None  # Content-Encoding as sent; ``data`` is already decoded
    decode_error: str | None = None


@dataclass(slots=True)
class Request:
    method: str
    path: str  # path + query string, as sent (redacted once stored)
    headers: Headers
    body: Body
    http_version: str = "1.1"


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: Body


@dataclass(slots=True)
class Timings:
    """Wall-clock instants (epoch seconds) of one exchange's life on the hop.

    Only ``received`` is read from the wall clock; the others are derived from a monotonic
    clock on the hot path so that durations never go negative when the clock is adjusted.
    ``None`` means that point was never reached (e.g. no upstream connection on refusal).
    """

    received: float
    upstream_connected: float | None = None
    first_byte: float | None = None
    done: float | None = None

    @property
    def duration_ms(self) -> float | None:
        return None if self.done is None else (self.done - self.received) * 1000.0

    @property
    def ttfb_ms(self) -> float | None:
        return None if self.first_byte is None else (self.first_byte - self.received) * 1000.0


@dataclass(slots=True)
class SqlStatement:
    """One SQL statement Prisma will run (Prisma 7 plans) or ran (engine telemetry)."""

    sql: str
    params: list[Any] = field(default_factory=list)
    param_count: int = 0
    duration_ms: float | None = None


@dataclass(slots=True)
class Operation:
    """What Prisma asked for, decoded from one HTTP request (and its response).

    ``protocol`` names the wire generation: ``"engine-json"``, ``"engine-graphql"``,
    ``"engine"`` (a body-less engine endpoint: transaction start/commit/rollback, status,
    metrics — nothing on the wire tells JSON from GraphQL there), ``"dataproxy"``, ``"qpe"``
    (Prisma 7 query-plan executor) or ``"unknown"`` (then ``reason`` says why). ``kind`` says what the request does on that protocol:
    ``query``, ``batch``, ``raw``, ``tx_start``, ``tx_commit``, ``tx_rollback``,
    ``schema_upload``, ``connection_info``, ``health``, ``metrics``, ``other``.
    A batch has one entry per operation in ``operations`` (each with model/action).
    """

    protocol: str = "unknown"
    kind: str = "other"
    model: str | None = None
    action: str | None = None
    fingerprint: str | None = None
    txn: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    sql: list[SqlStatement] = field(default_factory=list)
    operations: list[dict[str, Any]] = field(default_factory=list)
    client_version: str | None = None
    schema_hash: str | None = None
    isolation_level: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


SHORT_ID_LEN = 8
_SEQ_BITS = 20  # ids per millisecond before the next millisecond's range is borrowed: ~1M
_id_lock = threading.Lock()
_id_last = 0
_id_random = random.Random()  # uniqueness, not secrecy: no syscall per id


def new_id() -> str:
    """16 hex digits: milliseconds since the epoch, then a counter that starts at random.

    Why time-ordered: the store's unique index on ``id`` then grows at its right edge; random
    ids made every insert touch a random page of that index, ~40 % of SQLite's cost per row
    at 200k rows (bench/README). Why the random start: a restarted recorder whose clock
    stepped back lands at a random place in that millisecond's range, not on ids already
    stored. The last digits change fastest, so tables show those (:func:`short_id`).
    """
    global _id_last
    v = (time.time_ns() // 1_000_000) << _SEQ_BITS
    with _id_lock:
        if v <= _id_last:  # same millisecond (or the clock stepped back): count on
            v = _id_last + 1
        else:
            v |= _id_random.getrandbits(_SEQ_BITS - 1)
        _id_last = v
    return "%016x" % v


def short_id(exchange_id: str) -> str:
    """What tables print: the fastest-changing digits (``show`` takes them, or any prefix)."""
    return exchange_id[-SHORT_ID_LEN:]


@dataclass(slots=True)
class Exchange:
    """One request/response pair that crossed the hop, and everything learnt about it.

    ``id`` is 16 hex digits, time-ordered (see :func:`new_id`); ``short_id`` is how tables show it.
    Later capabilities fill ``operation``, ``telemetry``, ``pool`` and the trace ids; the
    store keeps the whole record, so adding such a field needs no new table.
    """

    id: str
    request: Request
    timings: Timings
    response: Response | None = None
    client: str | None = None  # "ip:port" of the client that sent it
    upstream: str | None = None  # base URL of the upstream it was forwarded to
    failure: str | None = None
    failure_detail: str | None = None
    operation: Operation | None = None
    telemetry: dict[str, Any] | None = None  # what was asked of the engine, and its answer
    pool: dict[str, Any] | None = None  # derived pressure + engine pool samples at start/end
    trace_id: str | None = None
    span_id: str | None = None  # the sidecar's own span (the upstream sees it as parent)
    parent_span_id: str | None = None  # the client's span, when it sent a traceparent
    pressure: dict[str, Any] | None = None  # who held the pool, at a P2024/P2028/P6000

    @property
    def engine_ms(self) -> float | None:
        """Time the engine says it spent (its root span), None when it did not say."""
        eng = (self.telemetry or {}).get("engine")
        return None if not eng else eng.get("engine_ms")

    @property
    def sql_timings(self) -> list[dict[str, Any]]:
        eng = (self.telemetry or {}).get("engine")
        return [{"sql": s["sql"], "ms": s["ms"]} for s in (eng or {}).get("sql") or ()]

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status

    @property
    def truncated(self) -> bool:
        return self.request.body.truncated or bool(self.response and self.response.body.truncated)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (bodies excluded): headers as pairs, timings as epoch floats.

        Written out by hand: ``dataclasses.asdict`` deep-copies every nested value and was
        half of the capture worker's time per exchange.
        """
        rq, rs, t = self.request, self.response, self.timings
        return {
            "id": self.id,
            "request": {"method": rq.method, "path": rq.path, "headers": rq.headers,
                        "body": _body_meta(rq.body), "http_version": rq.http_version},
            "timings": {"received": t.received, "upstream_connected": t.upstream_connected,
                        "first_byte": t.first_byte, "done": t.done},
            "response": None if rs is None else {"status": rs.status, "reason": rs.reason,
                                                 "headers": rs.headers, "body": _body_meta(rs.body)},
            "client": self.client, "upstream": self.upstream, "failure": self.failure,
            "failure_detail": self.failure_detail,
            "operation": None if self.operation is None else operation_to_dict(self.operation),
            "telemetry": self.telemetry, "pool": self.pool, "trace_id": self.trace_id,
            "span_id": self.span_id, "parent_span_id": self.parent_span_id,
            "pressure": self.pressure,
        }


def _body_meta(b: Body) -> dict[str, Any]:
    return {"size": b.size, "sha256": b.sha256, "truncated": b.truncated, "encoding": b.encoding,
            "decode_error": b.decode_error}


def operation_to_dict(op: Operation) -> dict[str, Any]:
    """Shallow by design: decoders build ``details``/``operations`` from JSON values already."""
    out = {f: getattr(op, f) for f in _OPERATION_FIELDS}
    out["sql"] = [{"sql": s.sql, "params": s.params, "param_count": s.param_count,
                   "duration_ms": s.duration_ms} for s in op.sql]
    return out


_OPERATION_FIELDS = tuple(f.name for f in dataclasses.fields(Operation) if f.name != "sql")


def operation_from_dict(data: dict[str, Any] | None) -> Operation | None:
    """Rebuild an :class:`Operation` stored as JSON (unknown keys are ignored, not fatal)."""
    if not data:
        return None
    names = {f.name for f in dataclasses.fields(Operation)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["sql"] = [SqlStatement(**s) for s in kwargs.get("sql") or []]
    return Operation(**kwargs)


def exchange_from_dict(data: dict[str, Any], req_body: bytes, resp_body: bytes) -> Exchange:
    """Inverse of :meth:`Exchange.to_dict`, given the bodies stored beside it."""
    rq = data["request"]
    request = Request(method=rq["method"], path=rq["path"],
                      headers=[tuple(h) for h in rq["headers"]],  # type: ignore[misc]
                      body=Body(data=req_body, **rq["body"]), http_version=rq.get("http_version", "1.1"))
    response = None
    if data.get("response"):
        rs = data["response"]
        response = Response(status=rs["status"], reason=rs["reason"],
                            headers=[tuple(h) for h in rs["headers"]],  # type: ignore[misc]
                            body=Body(data=resp_body, **rs["body"]))
    return Exchange(
        id=data["id"], request=request, response=response, timings=Timings(**data["timings"]),
        client=data.get("client"), upstream=data.get("upstream"), failure=data.get("failure"),
        failure_detail=data.get("failure_detail"), operation=operation_from_dict(data.get("operation")),
        telemetry=data.get("telemetry"), pool=data.get("pool"), trace_id=data.get("trace_id"),
        span_id=data.get("span_id"), parent_span_id=data.get("parent_span_id"),
        pressure=data.get("pressure"),
    )
