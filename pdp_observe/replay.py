"""Replay a recorded request against the upstream: what may be replayed, how, and the diff.

Pure decisions (no I/O) used by ``POST /api/v1/exchanges/{id}/replay`` (:mod:`pdp_observe.api`):

* :func:`read_only` — replaying must not change data unless a person confirms it. Decided
  from the decoded Prisma operation: ``find*``, ``aggregate``, ``groupBy``, ``count`` (and
  Mongo's ``findRaw``/``aggregateRaw``) read; everything else — ``create*``, ``update*``,
  ``delete*``, ``upsert*``, ``queryRaw`` (SQL of any kind), ``executeRaw``, ``runCommandRaw``,
  transaction start/commit/rollback — may write. Prisma 7 plans carry their SQL: a read
  action is read-only only when no statement writes (INSERT, UPDATE, DELETE, MERGE, DDL,
  locks …). A request Prisma did not send (non-Prisma paths) is read-only when its HTTP
  method is safe (GET, HEAD, OPTIONS).
* :func:`replay_request` — the request as the client sent it (hop-by-hop headers dropped),
  or why it cannot be sent faithfully: a truncated body, or a secret redacted in the path or
  body. A redacted header (``Authorization`` …) is left out and named: the caller replays
  without it and reports when the upstream insists on it.
* :func:`client_body` and :func:`body_diff` — the original answer as the client received it
  (telemetry the sidecar asked for removed) and a unified diff of pretty-printed JSON.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from .exchange import Exchange, Operation

READ_ACTIONS = frozenset({
    "findUnique", "findUniqueOrThrow", "findFirst", "findFirstOrThrow", "findMany",
    "aggregate", "groupBy", "count", "findRaw", "aggregateRaw",
})
READ_KINDS = frozenset({"health", "metrics", "connection_info"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITE_SQL = re.compile(
    r"\b(insert|update|delete|merge|upsert|replace|create|drop|alter|truncate|grant|revoke|"
    r"copy|call|do|lock|vacuum|reindex|refresh|comment|rename|set|nextval|setval)\b",
    re.IGNORECASE)
_QUOTED = re.compile(r"\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*'|`[^`]*`|\[[^\]]*\]")
_REDACTED = ("[REDACTED:", "REDACTED-")
HOP_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection", "proxy-authenticate", "expect",
})
DROPPED_HEADERS = frozenset({"traceparent", "tracestate", "content-encoding"})
"""Not sent again: the trace belongs to the original request; the stored body is decoded."""


def sql_writes(sql: str) -> bool:
    """True when a statement may change data (quoted identifiers and literals ignored)."""
    return bool(_WRITE_SQL.search(_QUOTED.sub(" ", sql)))


def read_only(ex: Exchange) -> tuple[bool, str]:
    """(replaying it cannot change data, why) — see the module docstring for the rules."""
    op = ex.operation
    method = ex.request.method.upper()
    if op is None or op.protocol == "unknown":
        if method in SAFE_METHODS:
            return True, f"not a Prisma request; {method} is a safe HTTP method"
        return False, f"not a decoded Prisma request and {method} may change data"
    if op.kind in READ_KINDS:
        return True, f"{op.kind} request"
    if op.kind in ("tx_start", "tx_commit", "tx_rollback"):
        return False, f"{op.kind} opens or ends an interactive transaction"
    if op.kind not in ("query", "batch", "raw"):
        if method in SAFE_METHODS:
            return True, f"{op.kind} request with the safe HTTP method {method}"
        return False, f"{op.kind} request with {method}"
    actions = [o.get("action") for o in op.operations] if op.kind == "batch" else [op.action]
    writes = [a or "unknown action" for a in actions if a not in READ_ACTIONS]
    if writes:
        return False, f"{', '.join(dict.fromkeys(writes))} may change data"
    writing = [s.sql for s in op.sql if sql_writes(s.sql)]
    if writing:
        return False, f"its SQL writes: {writing[0][:120]}"
    what = _label(op)
    return True, f"{what} only reads" + (f" ({len(op.sql)} SELECT statements)" if op.sql else "")


def _label(op: Operation) -> str:
    if op.kind == "batch":
        return f"batch of {len(op.operations)}"
    return f"{op.model}.{op.action}" if op.model else str(op.action)


class NotReplayable(Exception):
    """The stored request differs from what was sent (truncated, redacted): HTTP 422."""


@dataclass
class ReplayRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    left_out: list[str] = field(default_factory=list)  # redacted headers not sent
    notes: list[str] = field(default_factory=list)


def replay_request(ex: Exchange) -> ReplayRequest:
    """The request to send again, or :class:`NotReplayable` with what is missing."""
    rq = ex.request
    if rq.body.truncated:
        raise NotReplayable(f"the request body was truncated when captured ({len(rq.body.data)} of "
                            f"{rq.body.size} bytes kept; raise --capture-body-limit): it cannot be sent again "
                            "as it was")
    if any(m in rq.path for m in _REDACTED):
        raise NotReplayable("a secret in the request URL was redacted when captured (e.g. ?api_key=…): "
                            "the original value is not stored, so the request cannot be sent again as it was")
    if rq.body.decode_error:
        raise NotReplayable(f"the request body could not be decoded when captured ({rq.body.decode_error})")
    if any(m.encode() in rq.body.data for m in _REDACTED):
        raise NotReplayable("a secret in the request body (a connection string or credential) was redacted "
                            "when captured: the original is not stored, so the request cannot be sent again "
                            "as it was")
    headers: list[tuple[str, str]] = []
    left_out: list[str] = []
    notes: list[str] = []
    for k, v in rq.headers:
        lk = k.lower()
        if lk in HOP_HEADERS:
            continue
        if lk in DROPPED_HEADERS:
            if lk == "content-encoding":
                notes.append(f"the body was sent {v}-encoded; it is replayed decoded, without Content-Encoding")
            continue
        if any(m in v for m in _REDACTED):
            left_out.append(k)
            continue
        headers.append((k, v))
    return ReplayRequest(rq.method, rq.path, headers, rq.body.data, left_out, notes)


def client_body(ex: Exchange) -> bytes:
    """The response body as the client received it: telemetry the sidecar added is removed."""
    rs = ex.response
    if rs is None:
        return b""
    tel = ex.telemetry or {}
    gen = tel.get("generation")
    if not gen or not tel.get("sent") or tel.get("stripped_bytes") in (None, 0, -1):
        return rs.body.data
    from .engine.telemetry import client_ask, strip_extensions

    new = strip_extensions(rs.body.data, client_ask(tel.get("client_asked"), gen), gen)
    return rs.body.data if new is None else new


def pretty(data: bytes) -> str:
    """Pretty-printed JSON (keys sorted) when the body parses, else its text."""
    try:
        return json.dumps(json.loads(data), indent=2, sort_keys=True, ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def body_diff(original: bytes, replayed: bytes) -> str:
    """Unified diff original → replay of the pretty-printed bodies ("" when equal)."""
    a, b = pretty(original), pretty(replayed)
    if a == b:
        return ""
    return "".join(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                        "original", "replay", n=3))
