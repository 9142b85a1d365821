"""Renderings of one exchange (the ``show --json`` dict) for the detail screen's tabs.

Pure functions to Rich renderables, so they are tested without an app. Text views reuse
:mod:`pdp_observe.views` (the same words as ``pdp-observe show``).
"""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..exchange import exchange_from_dict
from ..views import correlation_block, human_bytes, operation_block, pretty_body

Detail = dict[str, Any]

SEGMENT_STYLES = {
    "sidecar → upstream": "grey62",
    "upstream queue": "yellow",
    "engine": "blue",
    "SQL": "magenta",
    "upstream": "blue",
    "response": "green",
}


def to_exchange(d: Detail) -> Any:
    """The :class:`Exchange` back from its JSON form (bodies from their ``text``)."""
    data = json.loads(json.dumps(d))
    bodies = []
    for part in ("request", "response"):
        section = data.get(part)
        text = ""
        if section is not None:
            text = section["body"].pop("text", "") or ""
        bodies.append(text.encode("utf-8"))
    known = ("size", "sha256", "truncated", "encoding", "decode_error")
    for part in ("request", "response"):
        if data.get(part):
            data[part]["body"] = {k: v for k, v in data[part]["body"].items() if k in known}
    return exchange_from_dict(data, bodies[0], bodies[1])


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, (b - a) * 1000.0)


def engine_ms(d: Detail) -> float | None:
    return (((d.get("telemetry") or {}).get("engine")) or {}).get("engine_ms")


def sql_timings(d: Detail) -> list[dict[str, Any]]:
    return list((((d.get("telemetry") or {}).get("engine")) or {}).get("sql") or [])


def timing_segments(d: Detail) -> list[tuple[str, float]]:
    """Where the time went, in order: sidecar→upstream, queue, engine, SQL, response."""
    t = d.get("timings") or {}
    received, connected, first, done = (t.get(k) for k in ("received", "upstream_connected", "first_byte", "done"))
    segs: list[tuple[str, float]] = []
    if (ms := _ms(received, connected)) is not None:
        segs.append(("sidecar → upstream", ms))
    upstream = _ms(connected if connected is not None else received, first)
    eng = engine_ms(d)
    sql = sum(q.get("ms") or 0.0 for q in sql_timings(d))
    if upstream is not None and eng is not None:
        queued = (d.get("pool") or {}).get("queued_ms")
        queued = max(0.0, upstream - eng) if queued is None else queued
        segs += [("upstream queue", queued), ("engine", max(0.0, eng - sql)), ("SQL", sql)]
    elif upstream is not None:
        segs.append(("upstream", upstream))
    if (ms := _ms(first, done)) is not None:
        segs.append(("response", ms))
    return segs


def timing_bar(d: Detail, width: int = 80) -> Text:
    """A stacked bar of :func:`timing_segments` scaled to ``width``, with a legend."""
    segs = [(name, ms) for name, ms in timing_segments(d) if ms > 0]
    total = sum(ms for _, ms in segs)
    out = Text()
    if total <= 0:
        return Text("no timings (the exchange did not complete)", "dim")
    used = 0
    for i, (name, ms) in enumerate(segs):
        cells = max(1, round(ms / total * width)) if i < len(segs) - 1 else max(1, width - used)
        out.append("█" * cells, SEGMENT_STYLES.get(name, "white"))
        used += cells
    out.append("\n")
    for name, ms in segs:
        out.append("■ ", SEGMENT_STYLES.get(name, "white"))
        out.append(f"{name} {ms:.2f} ms   ")
    return out


def _clock(ts: float | None, tz: tzinfo | None) -> str:
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, tz)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + (dt.strftime(" %Z") if tz else "")


def facts(d: Detail, tz: tzinfo | None) -> Table:
    rq, rs, t = d.get("request") or {}, d.get("response"), d.get("timings") or {}
    op = d.get("operation") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    dur = _ms(t.get("received"), t.get("done"))
    rows: list[tuple[str, Any]] = [
        ("id", d.get("id")),
        ("received", _clock(t.get("received"), tz)),
        ("request", f"{rq.get('method')} {rq.get('path')}"),
        ("status", f"{rs['status']} {rs.get('reason') or ''}" if rs else "no response"),
        ("duration", f"{dur:.2f} ms" if dur is not None else "unfinished"),
        ("client → upstream", f"{d.get('client') or '-'} → {d.get('upstream') or '-'}"),
        ("sizes", (f"request {human_bytes((rq.get('body') or {}).get('size'))}, "
                   f"response {human_bytes(((rs or {}).get('body') or {}).get('size'))}")),
    ]
    if d.get("failure"):
        rows.append(("FAILURE", Text(f"{d['failure']}: {d.get('failure_detail') or ''}", "bold red")))
    if op:
        what = f"{op.get('model')}.{op.get('action')}" if op.get("model") else (op.get("action") or op.get("kind"))
        rows.append(("operation", f"{what}  [{op.get('protocol')}, {op.get('kind')}]"))
        if op.get("error_code") or op.get("error_message"):
            rows.append(("error", Text(f"{op.get('error_code') or ''} {op.get('error_message') or ''}".strip(), "red")))
        if op.get("fingerprint"):
            rows.append(("fingerprint", op["fingerprint"]))
    if tx := d.get("transaction"):
        position = (tx.get("position") or 0) + 1
        rows.append(("transaction", f"{tx.get('txn')} ({tx.get('outcome')}, exchange {position} of "
                                    + f"{tx.get('exchange_count')}; t opens it)"))
    elif op.get("txn"):
        rows.append(("transaction", op["txn"]))
    for k, v in rows:
        table.add_row(k, v if isinstance(v, Text) else str(v))
    return table


def overview(d: Detail, tz: tzinfo | None, width: int = 80) -> RenderableType:
    parts: list[RenderableType] = [facts(d, tz), Text(""), Text("where the time went", "bold"),
                                   timing_bar(d, width)]
    corr = correlation_block(to_exchange(d), d.get("received_spans") or [])
    pool = [line for line in corr if not line.startswith(("engine ", "  +", "  sql[", "trace ", "otlp ", "telemetry"))]
    if pool:
        parts += [Text(""), Text("pool and pressure", "bold"), Text("\n".join(pool))]
    return Group(*parts)


def request_view(d: Detail) -> RenderableType:
    """The decoded operation, its SQL (highlighted, with parameters), then the body."""
    parts: list[RenderableType] = []
    ex = to_exchange(d)
    if ex.operation is not None:
        parts += [Text("\n".join(operation_block(ex.operation))), Text("")]
        for i, st in enumerate(ex.operation.sql, 1):
            ms = f"  ({st.duration_ms:.2f} ms)" if st.duration_ms is not None else ""
            parts.append(Text(f"SQL {i}{ms}", "bold"))
            parts.append(Syntax(st.sql, "sql", word_wrap=True, background_color="default"))
            if st.params:
                parts.append(Text("  params: " + json.dumps(st.params, ensure_ascii=False)[:2000], "dim"))
        if ex.operation.sql:
            parts.append(Text(""))
    elif timings := sql_timings(d):
        for i, q in enumerate(timings, 1):
            parts.append(Text(f"SQL {i} ({q.get('ms')} ms, from the engine)", "bold"))
            parts.append(Syntax(q.get("sql") or "", "sql", word_wrap=True, background_color="default"))
    rq = d.get("request") or {}
    parts.append(Text(f"{rq.get('method')} {rq.get('path')}", "bold"))
    parts.append(body_renderable(rq.get("body") or {}, _ctype(rq.get("headers"))))
    return Group(*parts)


def _ctype(headers: Any) -> str | None:
    return next((v for k, v in headers or () if k.lower() == "content-type"), None)


def body_renderable(body: dict[str, Any], ctype: str | None) -> RenderableType:
    text = body.get("text") or ""
    pretty = pretty_body(text.encode("utf-8"), ctype)
    if pretty.startswith(("{", "[")):
        return Syntax(pretty, "json", word_wrap=True, background_color="default")
    return Text(pretty)


def headers_view(d: Detail) -> RenderableType:
    """Request and response headers as stored (secrets already redacted at capture)."""
    parts: list[RenderableType] = []
    for label, section in (("request", d.get("request")), ("response", d.get("response"))):
        table = Table(title=f"{label} headers", title_justify="left", expand=True, show_edge=False)
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for k, v in (section or {}).get("headers") or ():
            table.add_row(k, Text(v, "yellow") if "REDACTED" in v else v)
        parts += [table, Text("")]
    return Group(*parts)


def raw_view(d: Detail) -> RenderableType:
    """Bodies exactly as captured (decoded, redacted), with what was cut off."""
    parts: list[RenderableType] = []
    for label, section in (("request", d.get("request")), ("response", d.get("response"))):
        if not section:
            parts.append(Text(f"{label}: none", "dim"))
            continue
        b = section.get("body") or {}
        note = f"{label} body: {b.get('size')} bytes, sha256 {(b.get('sha256') or '')[:16]}"
        if b.get("encoding"):
            note += f", content-encoding {b['encoding']} (shown decoded)"
        text = b.get("text") or ""
        parts.append(Text(note, "bold"))
        if b.get("truncated"):
            parts.append(Text(f"TRUNCATED: the first {len(text.encode())} of {b.get('size')} bytes were kept",
                              "bold yellow"))
        if b.get("decode_error"):
            parts.append(Text(str(b["decode_error"]), "red"))
        parts += [Text(text or "(empty)"), Text("")]
    return Group(*parts)


def response_json(d: Detail) -> Any:
    """The response body parsed as JSON, or None when it is not JSON."""
    text = ((d.get("response") or {}).get("body") or {}).get("text") or ""
    try:
        return json.loads(text)
    except ValueError:
        return None


# ---- trace waterfall -----------------------------------------------------------------


def trace_spans(d: Detail) -> list[tuple[int, str, float, float]]:
    """``(depth, name, start, end)`` in epoch seconds: sidecar, upstream, engine spans, SQL, OTLP."""
    t = d.get("timings") or {}
    received = t.get("received")
    if received is None:
        return []
    done = t.get("done") or t.get("first_byte") or received
    out = [(0, "sidecar (hop)", received, done)]
    connected = t.get("upstream_connected")
    if connected is not None:
        out.append((1, "upstream", connected, t.get("first_byte") or done))
    eng = ((d.get("telemetry") or {}).get("engine")) or {}
    spans = [s for s in eng.get("spans") or () if s.get("start") is not None and s.get("end") is not None]
    shift = 0.0
    if spans:
        first = min(s["start"] for s in spans)
        if not (received - 1.0 <= first <= done + 1.0):  # another clock: line it up with the upstream leg
            shift = (connected or received) - first
        out += _tree(spans, "id", "parent_id", shift, base=2)
    for i, q in enumerate(eng.get("sql") or (), 1):
        if q.get("start") is not None and q.get("ms") is not None:
            out.append((3, f"sql[{i}] {(q.get('sql') or '')[:40]}", q["start"] + shift,
                        q["start"] + shift + q["ms"] / 1000.0))
    received_spans = [s for s in d.get("received_spans") or () if s.get("start") is not None]
    if received_spans:
        out += _tree(received_spans, "span_id", "parent_span_id", 0.0, base=1, prefix="otlp ")
    return out


def _tree(spans: list[dict[str, Any]], id_key: str, parent_key: str, shift: float, *, base: int,
          prefix: str = "") -> list[tuple[int, str, float, float]]:
    ids = {s.get(id_key) for s in spans}
    children: dict[Any, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get(parent_key) if s.get(parent_key) in ids else None
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, str, float, float]] = []

    def walk(parent: Any, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x["start"]):
            out.append((depth, prefix + str(s.get("name")), s["start"] + shift, s["end"] + shift))
            if depth < base + 12:
                walk(s.get(id_key), depth + 1)

    walk(None, base)
    return out


def waterfall(d: Detail, width: int = 100) -> RenderableType:
    spans = trace_spans(d)
    if not spans:
        return Text("no timings recorded", "dim")
    t0 = min(s[2] for s in spans)
    t1 = max(s[3] for s in spans)
    span_s = max(t1 - t0, 1e-6)
    label_w, ms_w = 44, 10
    bar_w = max(10, width - label_w - ms_w - 2)
    out = Text()
    trace = d.get("trace_id")
    if trace:
        out.append(f"trace {trace}  span {d.get('span_id')}\n", "dim")
    for depth, name, start, end in spans:
        label = ("  " * depth + name)[:label_w].ljust(label_w)
        a = int((start - t0) / span_s * bar_w)
        b = max(a + 1, round((end - t0) / span_s * bar_w))
        style = "magenta" if name.startswith("sql[") else "blue" if depth >= 2 else "green"
        out.append(label)
        out.append(" " * a + "━" * (b - a), style)
        out.append(" " * (bar_w - b + 1))
        out.append(f"{(end - start) * 1000:8.2f}ms\n")
    return out
