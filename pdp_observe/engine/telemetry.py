"""Telemetry in Prisma responses: ask for it upstream, hide it from the client, read it.

The sidecar wants the server's own spans and query logs for every exchange, but the client
must get the body it would have got without the sidecar. So, per request:

1. :func:`client_ask` parses the client's ``X-Capture-Telemetry`` exactly as the server of that
   generation would (protocols.md A.7, C.4); :func:`merged_header` adds ``tracing`` / ``query``
   to it, and refuses (``None``) when the client's header is invalid: the server then answers
   as it would without the sidecar (for the executor an invalid token is a 400 for the whole
   request, so the sidecar must never be the one who sends one).
2. :func:`strip_extensions` removes from the response what only the added tokens produced.
   It splices bytes and never re-serialises: the data part, and every kept log element, stay
   byte-identical (the server's number and unicode formatting included).
3. :func:`parse_telemetry` reads the three ``extensions`` shapes (engine Gen1 4.10–6.0, engine
   Gen2 6.1+, Prisma 7 executor, protocols.md A.7, C.4, F.6, G) into one
   :class:`EngineTelemetry`: spans, SQL timings, the engine's own duration, other logs.

Every function here is pure and never raises: a malformed body costs its telemetry (``None``),
never the exchange.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..protocol._wire import as_dict, as_list, as_str, bounded

__all__ = [
    "GEN_ENGINE",
    "GEN_QPE",
    "CaptureAsk",
    "EngineSpan",
    "EngineTelemetry",
    "SqlTiming",
    "client_ask",
    "merged_header",
    "parse_telemetry",
    "strip_extensions",
    "telemetry_from_extensions",
]

GEN_ENGINE = "engine"
"""Query-engine HTTP API, and the Data Proxy (whose server hands the header to an engine)."""
GEN_QPE = "qpe"
"""Prisma 7 query-plan executor (Accelerate, ``prisma dev``)."""

_LEVELS = {
    # Gen2 ``CaptureSettings::from_str`` (case-sensitive). Gen1 is laxer (lower-cases, drops
    # unknown tokens), so a header valid here means the same to both engine generations.
    GEN_ENGINE: frozenset({"error", "warn", "info", "debug", "trace", "query"}),
    # ``client-telemetry.ts``: ``trace`` is *not* a level here (400 "Malformed …").
    GEN_QPE: frozenset({"debug", "query", "info", "warn", "error"}),
}
_TRACING = "tracing"


# --------------------------------------------------------------------------- header


@dataclass(frozen=True, slots=True)
class CaptureAsk:
    """What a client's ``X-Capture-Telemetry`` makes the server capture.

    ``valid=False`` means the server rejects the header (engine: captures nothing; executor:
    400 for the whole request); ``tracing``/``levels`` are then empty, which is what the
    engine effectively captures.
    """

    tracing: bool
    levels: frozenset[str]
    valid: bool


_NOTHING = CaptureAsk(tracing=False, levels=frozenset(), valid=False)


def _tokens(value: str) -> list[str]:
    """Split, trim, skip empties: the one tokenisation both servers share."""
    return [t for t in (p.strip() for p in value.split(",")) if t]


def client_ask(value: str | None, generation: str) -> CaptureAsk | None:
    """The client's capture request as that generation's server reads it; ``None``: no header."""
    if value is None:
        return None
    levels = _LEVELS.get(generation)
    if levels is None or not isinstance(value, str):
        return _NOTHING
    tracing, asked = False, set()
    for token in _tokens(value):
        if token == _TRACING:
            tracing = True
        elif token in levels:
            asked.add(token)
        else:
            return _NOTHING  # one bad token spoils the whole header on both servers
    return CaptureAsk(tracing=tracing, levels=frozenset(asked), valid=True)


def merged_header(
    value: str | None, generation: str, want: tuple[str, ...] = ("tracing", "query")
) -> str | None:
    """The ``X-Capture-Telemetry`` value to send upstream, or ``None`` to leave the request alone.

    The client's tokens come first, in their order and spelling, then every wanted token the
    generation accepts and the client did not ask for. ``None`` when the client's header is
    invalid (the server must answer exactly as without the sidecar) or nothing would change.
    """
    ask = client_ask(value, generation)
    if ask is not None and not ask.valid:
        return None
    levels = _LEVELS.get(generation)
    if levels is None:
        return None
    have = _tokens(value) if value is not None else []
    added: list[str] = []
    for token in want:
        acceptable = isinstance(token, str) and (token == _TRACING or token in levels)
        if acceptable and token not in have and token not in added:
            added.append(token)
    if not added:
        return None
    return ", ".join(have + added)


# --------------------------------------------------------------------------- byte scanning
#
# A small string-aware JSON scanner, only ever run over the extensions value (already parsed, so
# known to be valid). Fast path: orjson re-serialises the parsed value and a memcmp confirms it
# (servers write compact JSON). Otherwise strings are matched whole by one regex and containers
# by a regex nesting up to _DEPTH levels (possessive quantifiers: linear, no backtracking), one
# C-level match per value; deeper values fall back to a bracket walk.

_STR_PAT = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_STR = re.compile(_STR_PAT, re.DOTALL)
_WS = re.compile(rb"[ \t\n\r]*+")
_SCALAR = re.compile(rb"[^,:\]}\s\"{\[]++")
_RUN = re.compile(rb'(?:[^"{}\[\]]++|' + _STR_PAT + rb")*+", re.DOTALL)
_DEPTH = 24


def _nested(depth: int) -> re.Pattern[bytes]:
    inner = rb'[\[{](?:' + _STR_PAT + rb'|[^"{}\[\]]++)*+[\]}]'
    for _ in range(depth - 1):
        inner = rb'[\[{](?:' + _STR_PAT + rb'|[^"{}\[\]]++|' + inner + rb')*+[\]}]'
    return re.compile(inner, re.DOTALL)


_CONTAINER = _nested(_DEPTH)
_OPEN = b"{["
_SELF_DELIMITED = b'{["'
_CLOSE = b"}]"


def _ws(buf: bytes, pos: int) -> int:
    return _WS.match(buf, pos).end()  # type: ignore[union-attr]  # always matches (``*``)


def _bracket_walk(buf: bytes, pos: int) -> int:
    """End of the container at ``pos`` nested deeper than :data:`_CONTAINER` handles; -1 if none."""
    depth, n = 0, len(buf)
    while pos < n:
        c = buf[pos]
        if c in _OPEN:
            depth += 1
            pos += 1
        elif c in _CLOSE:
            depth -= 1
            pos += 1
            if depth == 0:
                return pos
        else:
            end = _RUN.match(buf, pos).end()  # type: ignore[union-attr]
            if end == pos:  # an unterminated string
                return -1
            pos = end
    return -1


_NO_HINT = object()


def _value_end(buf: bytes, pos: int, hint: Any = _NO_HINT) -> int:
    """End offset of the JSON value starting at ``pos`` (buffer already validated), -1 if none.

    ``hint`` is the value expected there, already parsed. Servers write compact JSON that
    orjson reproduces byte for byte, so ``orjson.dumps(hint)`` found at ``pos`` *is* the value
    (a container or string is self-delimiting): one memcmp instead of a ~5 ns/byte regex walk.
    Any mismatch (pretty-printed input, other float spelling) just takes the scanner.
    """
    if pos >= len(buf):
        return -1
    c = buf[pos]
    if hint is not _NO_HINT and c in _SELF_DELIMITED:
        try:
            dumped = orjson.dumps(hint)
        except (TypeError, orjson.JSONEncodeError):
            dumped = b""
        if dumped and buf.startswith(dumped, pos):
            return pos + len(dumped)
    if c == 0x22:  # "
        m = _STR.match(buf, pos)
    elif c in _OPEN:
        m = _CONTAINER.match(buf, pos)
        if m is None:
            return _bracket_walk(buf, pos)
    else:
        m = _SCALAR.match(buf, pos)
    return m.end() if m else -1


def _items(buf: bytes, pos: int, hints: list[Any] | None = None) -> list[tuple[int, int, int]] | None:
    """Members (``{``) or elements (``[``) of the container at ``pos``: ``(start, value, end)``.

    ``start`` is the key (object) or the value (array); ``None`` if the bytes do not scan.
    ``hints``: the parsed values in order (see :func:`_value_end`).
    """
    is_object = buf[pos] == 0x7B
    close = 0x7D if is_object else 0x5D
    pos = _ws(buf, pos + 1)
    items: list[tuple[int, int, int]] = []
    if pos < len(buf) and buf[pos] == close:
        return items
    while True:
        start = pos
        if is_object:
            m = _STR.match(buf, pos)
            if m is None:
                return None
            pos = _ws(buf, m.end())
            if buf[pos:pos + 1] != b":":
                return None
            pos = _ws(buf, pos + 1)
        value = pos
        n = len(items)
        end = _value_end(buf, pos, hints[n] if hints is not None and n < len(hints) else _NO_HINT)
        if end < 0:
            return None
        items.append((start, value, end))
        pos = _ws(buf, end)
        if pos >= len(buf):
            return None
        if buf[pos] == 0x2C:  # ,
            pos = _ws(buf, pos + 1)
        elif buf[pos] == close:
            return items
        else:
            return None


def _join(buf: bytes, items: list[tuple[int, int, int]], pieces: list[bytes | None]) -> bytes:
    """The container ``buf`` with item ``i`` replaced by ``pieces[i]`` (``None``: removed).

    Kept items keep the separator that followed them in the input, so compact and pretty
    input both come out as their server would have written the shorter container.
    """
    kept = [i for i, p in enumerate(pieces) if p is not None]
    if not kept:
        return buf[:1] + buf[-1:]
    out = [buf[: items[0][0]]]
    for n, i in enumerate(kept):
        out.append(pieces[i])  # type: ignore[arg-type]
        if n + 1 < len(kept):
            out.append(buf[items[i][2]: items[i + 1][0]])
    out.append(buf[items[-1][2]:])
    return b"".join(out)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse in the client would refuse it too


def _loads(data: bytes) -> Any:
    """Strict JSON or ``None``; orjson first (fast), the stdlib for what orjson refuses (ints
    past 64 bits), without the stdlib's ``NaN``/``Infinity`` extension."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


_KEY = b'"extensions"'
_MAX_CANDIDATES = 8
VALIDATE_LIMIT = 64 * 1024
"""Largest data part :func:`strip_extensions` proves to be JSON before editing (≤ ~0.2 ms)."""


@dataclass(frozen=True, slots=True)
class _Located:
    member: int  # start of the top-level member: its preceding "," or the object's "{"
    lead: bytes  # the byte at ``member``: b"," or b"{"
    value: int  # start of the extensions value
    end: int  # end of the extensions value
    ext: dict[str, Any]


def _locate(body: bytes, validate: bool) -> _Located | None:
    """The top-level ``"extensions"`` member, when it is the body's last member (every real
    server writes it last), with only its value parsed.

    In valid JSON a ``"extensions"`` whose first quote is not escaped, followed by ``:``, a
    value, then only the final ``}``, *is* the top-level key: a nested one would need more
    closing brackets after it, and inside a string its opening quote would be escaped. So the
    data part is never scanned; with ``validate`` it is parsed once (up to
    :data:`VALIDATE_LIMIT`) so that a malformed body is refused, not edited.
    """
    close = _back(body, len(body) - 1, _SPACE)
    if close < 1 or body[close] != 0x7D or body[_ws(body, 0):_ws(body, 0) + 1] != b"{":
        return None
    limit = close
    for _ in range(_MAX_CANDIDATES):
        i = body.rfind(_KEY, 0, limit)
        if i < 0:
            return None
        limit = i
        pos = _ws(body, i + len(_KEY))
        if body[pos:pos + 1] != b":":
            continue
        if (i - 1 - _back(body, i - 1, b"\\")) % 2:  # an escaped quote: inside a string
            continue
        member = _back(body, i - 1, _SPACE)
        lead = body[member:member + 1]
        if lead not in (b",", b"{"):
            continue
        value = _ws(body, pos + 1)
        end = value + len(body[value:close].rstrip())
        if body[value:value + 1] != b"{" or end <= value:
            continue
        ext = _loads(body[value:end])  # fails when the candidate is nested (extra "}")
        if not isinstance(ext, dict):
            continue
        if validate and not _valid_head(body, member, lead):
            return None
        return _Located(member, lead, value, end, ext)
    return None


_SPACE = b" \t\r\n"


def _back(buf: bytes, pos: int, skip: bytes) -> int:
    """The last offset ≤ ``pos`` whose byte is not in ``skip`` (-1 if none); no copying."""
    while pos >= 0 and buf[pos] in skip:
        pos -= 1
    return pos


def _valid_head(body: bytes, member: int, lead: bytes) -> bool:
    """Whether the body before the extensions member is an object's valid start."""
    if lead == b"{":
        return body[:member].strip() == b""
    if member > VALIDATE_LIMIT:
        return True  # a multi-megabyte result costs no parse; its structure was checked above
    return isinstance(_loads(body[:member] + b"}"), dict)


# --------------------------------------------------------------------------- strip


def _level_filter(logs: Any, levels: frozenset[str]) -> list[bool]:
    return [isinstance(e, dict) and e.get("level") in levels for e in as_list(logs)]


def _filtered_array(
    buf: bytes, item: tuple[int, int, int], keep: list[bool], elements_parsed: list[Any]
) -> bytes | None:
    """The array value of ``item`` with only the ``keep`` elements (bytes untouched)."""
    value, end = item[1], item[2]
    if all(keep):
        return buf[item[0]:end]
    array = buf[value:end]
    prefix = buf[item[0]:value]
    if not any(keep):
        return prefix + b"[]"
    elements = _items(array, 0, elements_parsed)
    if elements is None or len(elements) != len(keep):
        return None
    pieces = [array[s:e] if k else None for (s, _, e), k in zip(elements, keep)]
    return prefix + _join(array, elements, pieces)


def _is_gen1(ext: dict[str, Any]) -> bool:
    """Gen1 spans are snake_case with OTel hex ids; its logs carry ``span_id``."""
    for span in as_list(ext.get("traces")):
        if isinstance(span, dict) and ("trace_id" in span or "span_id" in span or "start_time" in span):
            return True
    return any(isinstance(e, dict) and "span_id" in e for e in as_list(ext.get("logs")))


def _changes(action: Any, value: Any) -> bool:
    """Whether a :func:`_plan` action alters the member holding ``value``."""
    if action is True:
        return False
    if action is False:
        return True
    if action == "[]":
        return isinstance(value, list) and bool(value)
    return not all(action)


def _plan(ext: dict[str, Any], ask: CaptureAsk, generation: str) -> dict[str, Any] | None:
    """Per key: ``True`` keep, ``False`` drop, ``"[]"`` empty it, a list: keep these elements.

    ``None``: drop the whole extensions member.
    """
    plan: dict[str, Any] = {}
    if generation == GEN_QPE:
        for key, value in ext.items():
            if key == "logs":
                plan[key] = _level_filter(value, ask.levels) if ask.levels else False
            elif key == "spans":
                plan[key] = ask.tracing
            else:
                plan[key] = True
        return plan if any(v is not False for v in plan.values()) else None
    if generation == GEN_ENGINE:
        if _is_gen1(ext) and not (ask.tracing or ask.levels):
            return None  # Gen1 captures nothing and writes no extensions without a valid ask
        for key, value in ext.items():
            if key == "traces":
                plan[key] = True if ask.tracing or not isinstance(value, list) else "[]"
            elif key == "logs":
                plan[key] = _level_filter(value, ask.levels)
            else:
                plan[key] = True
        return plan
    return {key: True for key in ext}


def strip_extensions(body: bytes, ask: CaptureAsk | None, generation: str) -> bytes | None:
    """The body the client would have got had it sent only its own header (``ask``).

    ``None`` when nothing changes, or when the body is not something to edit safely (not a
    JSON object, no top-level ``extensions`` as its last member, malformed). Only the removed
    parts change; see the module docstring and protocols.md A.7 / C.4 for the per-generation
    rules: executor — ``logs`` only if a level was asked (matching levels only), ``spans``
    only with ``tracing``, the member gone when nothing is left; engine Gen2 — both keys
    always present, filtered; engine Gen1 — the member gone unless something valid was asked.
    An invalid ``ask`` counts as no header: the sidecar never widens one (:func:`merged_header`),
    and an engine given one captures nothing.
    """
    try:
        return _strip(body, ask, generation)
    except Exception:  # noqa: BLE001 - hot path: a scanner bug must pass the body through
        return None


def _strip(body: bytes, ask: CaptureAsk | None, generation: str) -> bytes | None:
    if not isinstance(body, (bytes, bytearray)) or generation not in _LEVELS:
        return None
    body = bytes(body)
    loc = _locate(body, validate=True)
    if loc is None:
        return None
    effective = ask if ask is not None and ask.valid else _NOTHING
    plan = _plan(loc.ext, effective, generation)
    view = memoryview(body)  # one copy of a large data part, not three
    if plan is None:
        if loc.lead == b"{":  # it was the only member: the object becomes empty
            return body[: loc.member + 1] + body[loc.end :].lstrip(b" \t\r\n")
        return b"".join((view[: loc.member], view[loc.end :]))
    if not any(_changes(action, loc.ext[key]) for key, action in plan.items()):
        return None  # decided on the parsed extensions: no byte scan for a no-op
    ext = body[loc.value : loc.end]
    members = _items(ext, 0, list(loc.ext.values()))
    if members is None or len(members) != len(loc.ext):  # duplicate keys: do not guess
        return None
    pieces: list[bytes | None] = []
    for item, (key, action) in zip(members, plan.items()):
        if action is True or not _changes(action, loc.ext[key]):
            pieces.append(ext[item[0] : item[2]])
        elif action is False:
            pieces.append(None)
        elif action == "[]":
            pieces.append(ext[item[0] : item[1]] + b"[]")
        else:
            piece = _filtered_array(ext, item, action, as_list(loc.ext[key]))
            if piece is None:
                return None
            pieces.append(piece)
    return b"".join((view[: loc.value], _join(ext, members, pieces), view[loc.end :]))


# --------------------------------------------------------------------------- parse


@dataclass(frozen=True, slots=True)
class EngineSpan:
    """One server span; times are epoch seconds (from HrTime ``[sec, nanos]``)."""

    id: str
    parent_id: str | None
    name: str
    start: float
    end: float
    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent_id": self.parent_id, "name": self.name, "start": self.start,
            "end": self.end, "kind": self.kind, "attributes": self.attributes,
        }


@dataclass(frozen=True, slots=True)
class SqlTiming:
    """One SQL statement as the server timed it (``ms`` as reported, ``start`` epoch seconds)."""

    sql: str
    ms: float | None
    param_count: int | None
    span_id: str | None
    start: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sql": self.sql, "ms": self.ms, "param_count": self.param_count,
            "span_id": self.span_id, "start": self.start,
        }


@dataclass(frozen=True, slots=True)
class EngineTelemetry:
    """What the server said about one request: ``shape`` is ``gen1``, ``gen2`` or ``qpe``.

    ``engine_ms``: the root span's duration, or the spans' overall extent when there is no
    single root (executor: every child has ``parentId: null``); ``None`` without spans.
    ``logs``: the non-query log events as ``{level, message, timestamp}``.
    """

    shape: str
    spans: list[EngineSpan] = field(default_factory=list)
    sql: list[SqlTiming] = field(default_factory=list)
    engine_ms: float | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON with stable keys (what the store keeps)."""
        return {
            "shape": self.shape,
            "engine_ms": self.engine_ms,
            "spans": [s.to_dict() for s in self.spans],
            "sql": [s.to_dict() for s in self.sql],
            "logs": [dict(entry) for entry in self.logs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> EngineTelemetry:
        """Inverse of :meth:`to_dict`; tolerant (stored rows may come from older versions)."""
        d = as_dict(data)
        spans = []
        for s in as_list(d.get("spans")):
            s = as_dict(s)
            start, end = _num(s.get("start")), _num(s.get("end"))
            if start is None or end is None:
                continue
            spans.append(EngineSpan(
                id=_text(s.get("id")), parent_id=as_str(s.get("parent_id")),
                name=_text(s.get("name")), start=start, end=end, kind=_text(s.get("kind")),
                attributes=as_dict(s.get("attributes")),
            ))
        sql = []
        for q in as_list(d.get("sql")):
            q = as_dict(q)
            count = q.get("param_count")
            sql.append(SqlTiming(
                sql=_text(q.get("sql")), ms=_num(q.get("ms")),
                param_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
                span_id=as_str(q.get("span_id")), start=_num(q.get("start")),
            ))
        logs = [
            {"level": _text(e.get("level")), "message": _text(e.get("message")), "timestamp": _num(e.get("timestamp"))}
            for e in map(as_dict, as_list(d.get("logs")))
        ]
        return cls(
            shape=as_str(d.get("shape")) or "unknown", spans=spans, sql=sql,
            engine_ms=_num(d.get("engine_ms")), logs=logs,
        )


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _hr_ns(value: Any) -> int | float | None:
    """HrTime ``[seconds, nanos]`` → epoch nanoseconds, exact for the integers servers send.

    Durations are taken from these: as epoch-second floats they would carry ~0.1 µs of noise.
    """
    if isinstance(value, list) and len(value) == 2:
        sec, nanos = value
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (sec, nanos)):
            return sec * 1_000_000_000 + nanos
    return None


def _hr(value: Any) -> float | None:
    """HrTime ``[seconds, nanos]`` → epoch seconds."""
    ns = _hr_ns(value)
    return ns / 1e9 if ns is not None else None


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


_TRACEPARENT_COMMENT = re.compile(r"\s*/\*\s*traceparent='[^']*'\s*\*/\s*$")
_ZERO_ID = re.compile(r"^[0-]+$")
_ROOT_SUFFIXES = (
    ":query", ":start_transaction", ":commit_transaction", ":rollback_transaction", ":itx_runner",
)


def _shape(ext: dict[str, Any]) -> str:
    """F.6: executor ``spans``; engine ``traces`` snake_case (Gen1) or camelCase (Gen2)."""
    if "spans" in ext:
        return "qpe"
    if "traces" in ext:
        return "gen1" if _is_gen1(ext) else "gen2"
    logs = [e for e in as_list(ext.get("logs")) if isinstance(e, dict)]
    if any("span_id" in e for e in logs):
        return "gen1"
    if any("target" in e for e in logs):
        return "gen2"
    return "qpe"  # ``{"logs": [...]}`` alone is what the executor writes


_Timed = tuple[EngineSpan, float, float]  # the span, its start and end in epoch ns (ints)


def _spans(raw: Any, gen1: bool) -> list[_Timed]:
    keys = ("span_id", "parent_span_id", "start_time", "end_time") if gen1 else ("id", "parentId", "startTime", "endTime")
    out: list[_Timed] = []
    for s in as_list(raw):
        if not isinstance(s, dict):
            continue
        start, end = _hr_ns(s.get(keys[2])), _hr_ns(s.get(keys[3]))
        if start is None or end is None:
            continue
        span = EngineSpan(
            id=_id(s.get(keys[0])) or "", parent_id=_id(s.get(keys[1])), name=_text(s.get("name")),
            start=start / 1e9, end=end / 1e9, kind=_text(s.get("kind")),
            attributes=bounded(as_dict(s.get("attributes"))),
        )
        out.append((span, start, end))
    return out


def _engine_ms(timed: list[_Timed]) -> float | None:
    """The root's duration; the overall extent when there is no single root.

    A root's parent is absent from the set (Gen1: the caller's span; Gen2: ``null``). Only
    a set lookup, no tree walk, so the executor's self-parented all-zero spans (G) are safe.
    """
    if not timed:
        return None
    ids = {t[0].id for t in timed}
    roots = [t for t in timed if t[0].parent_id is None or t[0].parent_id not in ids]
    if len(roots) > 1:
        named = [t for t in roots if t[0].name in ("prisma:engine", "prisma:engine:query") or t[0].name.endswith(_ROOT_SUFFIXES)]
        roots = named if len(named) == 1 else roots
    if len(roots) == 1:
        return (roots[0][2] - roots[0][1]) / 1e6
    return (max(t[2] for t in timed) - min(t[1] for t in timed)) / 1e6


def _sql_text(text: str) -> str:
    """SQL without the engine's trailing ``/* traceparent='…' */`` comment (protocols.md D)."""
    return _TRACEPARENT_COMMENT.sub("", text) if "traceparent" in text else text


def _param_count(params: Any) -> int | None:
    if isinstance(params, str):
        params = _loads(params.encode("utf-8", "surrogatepass"))
    return len(params) if isinstance(params, list) else None


def _sql_from_logs(logs: list[dict[str, Any]], spans: list[EngineSpan], shape: str) -> list[SqlTiming]:
    by_id = {s.id: s for s in spans if s.name.endswith("db_query")} if shape != "qpe" else {}
    out = []
    for e in logs:
        attrs = as_dict(e.get("attributes"))
        text = attrs.get("query")
        if not isinstance(text, str):
            continue
        ms = _num(attrs.get("duration_ms"))
        if ms is None:
            ms = _num(attrs.get("duration"))
        span_id = _id(e.get("spanId")) or _id(e.get("span_id"))
        if span_id is not None and _ZERO_ID.match(span_id):
            span_id = None  # an executor without a tracer provider: ids are all zeros (G)
        start = None
        if shape == "qpe":
            stamp = _num(attrs.get("timestamp"))  # epoch ms of the query's start
            start = stamp / 1000.0 if stamp is not None else None
        elif span_id in by_id:
            start = by_id[span_id].start  # the db_query span the event was emitted in
        if start is None:
            logged = _hr(e.get("timestamp"))  # engine events are emitted when the query ends
            if logged is not None and ms is not None:
                start = logged - ms / 1000.0
        out.append(SqlTiming(
            sql=_sql_text(text), ms=ms, param_count=_param_count(attrs.get("params")),
            span_id=span_id, start=start,
        ))
    return out


def _sql_from_spans(timed: list[_Timed]) -> list[SqlTiming]:
    out = []
    for s, start, end in sorted(timed, key=lambda t: t[1]):
        if not s.name.endswith("db_query"):
            continue
        text = s.attributes.get("db.query.text")
        if not isinstance(text, str):
            text = s.attributes.get("db.statement")
        if isinstance(text, str):
            out.append(SqlTiming(
                sql=_sql_text(text), ms=(end - start) / 1e6, param_count=None,
                span_id=None if _ZERO_ID.match(s.id) else s.id, start=s.start,
            ))
    return out


def _is_query_log(e: dict[str, Any]) -> bool:
    attrs = as_dict(e.get("attributes"))
    return (e.get("level") == "query" or e.get("message") == "Query") and isinstance(attrs.get("query"), str)


def _other_log(e: dict[str, Any]) -> dict[str, Any]:
    level = _text(e.get("level")).strip('"')  # Gen1 may write '"info"' (A.7, inferred bug)
    message = e.get("message")
    if not isinstance(message, str):
        message = as_dict(e.get("attributes")).get("message")
    return {"level": level, "message": message if isinstance(message, str) else "", "timestamp": _hr(e.get("timestamp"))}


def telemetry_from_extensions(ext: Any) -> EngineTelemetry | None:
    """:func:`parse_telemetry` for an already-parsed ``extensions`` object."""
    if not isinstance(ext, dict):
        return None
    shape = _shape(ext)
    timed = _spans(ext.get("spans") if shape == "qpe" else ext.get("traces"), shape == "gen1")
    spans = [t[0] for t in timed]
    logs = [e for e in as_list(ext.get("logs")) if isinstance(e, dict)]
    query_logs = [e for e in logs if _is_query_log(e)]
    sql = _sql_from_logs(query_logs, spans, shape) if query_logs else _sql_from_spans(timed)
    others = [_other_log(e) for e in logs if not _is_query_log(e)]
    return EngineTelemetry(shape=shape, spans=spans, sql=sql, engine_ms=_engine_ms(timed), logs=others)


def parse_telemetry(body: bytes | None) -> EngineTelemetry | None:
    """The server's telemetry in a response body; ``None`` when it has no ``extensions``.

    Only the extensions member is parsed when it is the body's last member (always, from
    real servers); otherwise the whole body is parsed once. Never raises.
    """
    try:
        if not isinstance(body, (bytes, bytearray)) or _KEY not in body:
            return None
        body = bytes(body)
        loc = _locate(body, validate=False)
        if loc is not None:
            return telemetry_from_extensions(loc.ext)
        whole = _loads(body)
        return telemetry_from_extensions(as_dict(whole).get("extensions"))
    except Exception:  # noqa: BLE001 - a parser bug must cost the telemetry, not the exchange
        return None
