"""Text renderings of exchanges for the CLI: the ``ls`` table, ``--json`` lines, ``show``.

Pure functions from records to strings, so the same views serve the CLI, tests and later
exports. ``ls --json`` field names are a contract for scripts: add fields, never rename.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .exchange import Exchange, Operation, short_id
from .store import ListRow


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


def fmt_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def row_json(r: ListRow, op: Operation | None = None, record: dict[str, Any] | None = None,
             pressure: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stable ``ls --json`` object (add fields; never rename one).

    ``record`` is the stored exchange (telemetry, pool, trace ids); ``pressure`` the snapshot
    taken when this exchange hit a pool or transaction limit.
    """
    record = record or {}
    engine = (record.get("telemetry") or {}).get("engine") or {}
    out: dict[str, Any] = {
        "id": r.id, "ts": r.ts, "method": r.method, "path": r.path, "status": r.status,
        "duration_ms": None if r.duration_ms is None else round(r.duration_ms, 3),
        "req_bytes": r.req_bytes, "resp_bytes": r.resp_bytes, "failure": r.failure,
        "truncated": r.truncated,
        "protocol": r.protocol, "kind": r.kind, "model": r.model, "action": r.action,
        "fingerprint": r.fingerprint, "txn": r.txn, "error_code": r.error_code,
        "sql": [s.sql for s in op.sql] if op is not None else [],
        "engine_ms": None if r.engine_ms is None else round(r.engine_ms, 3),
        "sql_timings": [{"sql": s["sql"], "ms": s["ms"]} for s in engine.get("sql") or ()],
        "trace_id": r.trace_id,
        "pool": record.get("pool"),
        "pressure": pressure,
    }
    if op is not None and op.kind == "batch":
        out["operations"] = [{"model": o.get("model"), "action": o.get("action")} for o in op.operations]
    return out


def operation_label(r: ListRow) -> str:
    """``User.findMany`` / ``batch(3)`` / ``tx_start`` — what a person calls the request."""
    if r.model and r.action:
        return f"{r.model}.{r.action}"
    if r.action:
        return r.action
    if r.kind and r.kind not in ("other", "query"):
        return r.kind
    return "-"


def table(rows: list[ListRow], *, path_width: int = 40) -> str:
    head = ("ID", "TIME", "METHOD", "PATH", "OPERATION", "STATUS", "CODE", "MS", "SQL", "TXN", "REQ", "RESP")
    lines = []
    for r in rows:
        path = r.path if len(r.path) <= path_width else r.path[: path_width - 1] + "…"
        status = str(r.status) if r.status is not None else "-"
        if r.failure:
            status += f" {r.failure}"
        if r.truncated:
            status += " (trunc)"
        ms = "-" if r.duration_ms is None else f"{r.duration_ms:.1f}"
        lines.append((short_id(r.id), fmt_time(r.ts), r.method, path, operation_label(r), status,
                      r.error_code or "-", ms, str(r.sql_count) if r.sql_count else "-",
                      r.txn[:8] if r.txn else "-", human_bytes(r.req_bytes), human_bytes(r.resp_bytes)))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = {7, 8, 10, 11}

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(head), *(fmt(line) for line in lines)])


def drop_summary(counters: dict[str, int]) -> str | None:
    """One line on what the store lost, or None when nothing was."""
    dropped = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("dropped.") and v}
    pruned = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("pruned.") and v}
    parts = []
    if dropped:
        parts.append(f"{sum(dropped.values())} captures dropped ("
                     + ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) + "); traffic was not affected")
    if pruned:
        parts.append(f"{sum(pruned.values())} pruned by retention ("
                     + ", ".join(f"{k}: {v}" for k, v in sorted(pruned.items())) + ")")
    if undecoded := counters.get("undecoded.busy"):
        parts.append(f"{undecoded} stored without their Prisma operation decoded (recorder overloaded)")
    return "; ".join(parts) or None


def pretty_body(data: bytes, content_type: str | None) -> str:
    """Pretty JSON when it parses; text when it decodes; a hex preview otherwise."""
    if not data:
        return "(empty)"
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        preview = data[:256].hex(" ")
        return f"({len(data)} bytes of binary{', ' + content_type if content_type else ''}) {preview}"


def correlation_block(ex: Exchange, received: list[dict[str, Any]] = ()) -> list[str]:  # type: ignore[assignment]
    """What the engine said (spans, SQL timings), the trace, the pool and pressure snapshot."""
    lines: list[str] = []
    if ex.trace_id:
        parent = f" (child of client span {ex.parent_span_id})" if ex.parent_span_id else ""
        lines.append(f"trace       {ex.trace_id} span {ex.span_id}{parent}")
    tel = ex.telemetry or {}
    if tel.get("sent"):
        client = tel.get("client_asked")
        stripped = tel.get("stripped_bytes")
        note = ("passed on as sent (too large or compressed to edit)" if stripped == -1
                else f"{stripped} bytes the client did not ask for removed" if stripped else "nothing to remove")
        lines.append(f"telemetry   asked {tel['sent']!r} (client: {client!r}); {note}")
    eng = tel.get("engine") or {}
    if eng:
        ms = eng.get("engine_ms")
        lines.append(f"engine      {eng.get('shape')}: {len(eng.get('spans') or [])} spans"
                     + (f", {ms:.2f} ms in the engine" if ms is not None else ""))
        t0 = min((s["start"] for s in eng.get("spans") or ()), default=None)
        for s in eng.get("spans") or ():
            off = (s["start"] - t0) * 1000 if t0 is not None else 0.0
            lines.append(f"  +{off:7.2f} ms {(s['end'] - s['start']) * 1000:8.2f} ms  {s['name']}")
        for i, q in enumerate(eng.get("sql") or (), 1):
            ms_txt = f"{q['ms']:.2f} ms" if q.get("ms") is not None else "? ms"
            lines.append(f"  sql[{i}] {ms_txt:>10}  {q['sql']}")
    if received:
        lines.append(f"otlp        {len(received)} spans received for this trace: "
                     + ", ".join(sorted({s.get('name', '?') for s in received})[:8]))
    if ex.pool:
        p = ex.pool
        facts = [f"{k}={p[k]}" for k in ("in_flight", "open_transactions", "high_water", "upstream_ms",
                                         "queued_ms", "engine_connection_ms") if p.get(k) is not None]
        lines.append("pool        " + " ".join(facts))
        for edge in ("engine_start", "engine_end"):
            if s := p.get(edge):
                g = s.get("pool") or {}
                lines.append(f"  {edge:<13}open={g.get('open')} busy={g.get('busy')} idle={g.get('idle')} "
                             f"waiting={g.get('waiting')}" + (f" flags={s.get('flags')}" if s.get("flags") else ""))
    if ex.pressure:
        pr = ex.pressure
        lines.append(f"PRESSURE    {pr.get('trigger')} at {fmt_time(pr.get('at', 0))}: "
                     f"{pr.get('in_flight_count', 0)} requests in flight, "
                     f"{pr.get('open_transaction_count', 0)} transactions open")
        for tx in pr.get("open_transactions") or ():
            lines.append(f"  txn {tx.get('txn')} open {tx.get('age_ms')} ms, {tx.get('queries')} queries"
                         + (f" ({', '.join(tx.get('fingerprints') or [])})" if tx.get("fingerprints") else ""))
        for h in pr.get("in_flight") or ():
            what = f"{h.get('model')}.{h.get('action')}" if h.get("model") else f"{h.get('method')} {h.get('path')}"
            lines.append(f"  req {h.get('id') or '(in flight)'} {what} for {h.get('age_ms')} ms"
                         + (f" txn {h['txn']}" if h.get("txn") else ""))
    return lines


def show(ex: Exchange, received: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    t = ex.timings
    out = [f"exchange {ex.id}", f"  time      {fmt_time(t.received)} ({t.received:.6f})"]
    out.append(f"  client    {ex.client or '-'} -> upstream {ex.upstream or '-'}")
    timing = [f"total {t.duration_ms:.2f} ms" if t.duration_ms is not None else "unfinished"]
    if t.upstream_connected is not None:
        timing.append(f"upstream connected +{(t.upstream_connected - t.received) * 1000:.2f} ms")
    if t.ttfb_ms is not None:
        timing.append(f"first byte +{t.ttfb_ms:.2f} ms")
    out.append("  timing    " + ", ".join(timing))
    if ex.failure:
        out.append(f"  FAILURE   {ex.failure}: {ex.failure_detail or ''}")
    if ex.operation is not None:
        out += ["", *operation_block(ex.operation)]
    if corr := correlation_block(ex, received):
        out += ["", *corr]
    rq = ex.request
    out += ["", f"> {rq.method} {rq.path} HTTP/{rq.http_version}"]
    out += [f"> {k}: {v}" for k, v in rq.headers]
    out += ["", _body_block(rq.body, _ctype(rq.headers))]
    if ex.response is not None:
        rs = ex.response
        out += ["", f"< {rs.status} {rs.reason}"]
        out += [f"< {k}: {v}" for k, v in rs.headers]
        out += ["", _body_block(rs.body, _ctype(rs.headers))]
    return "\n".join(out)


def _ctype(headers: list[tuple[str, str]]) -> str | None:
    return next((v for k, v in headers if k.lower() == "content-type"), None)


def _body_block(body: Any, ctype: str | None) -> str:
    note = f"body: {body.size} bytes, sha256 {body.sha256[:16]}…"
    if body.encoding:
        note += f", content-encoding {body.encoding} (decoded below)"
    if body.truncated:
        note += f", TRUNCATED: first {len(body.data)} bytes kept"
    if body.decode_error:
        note += f", {body.decode_error}"
    return f"[{note}]\n{pretty_body(body.data, ctype)}"


def operation_block(op: Operation) -> list[str]:
    """The decoded Prisma operation, above the raw HTTP: what the request meant."""
    what = f"{op.model}.{op.action}" if op.model and op.action else (op.action or op.kind)
    lines = [f"prisma      {what}  [{op.protocol}, {op.kind}]"]
    facts = [("fingerprint", op.fingerprint), ("transaction", op.txn), ("isolation", op.isolation_level),
             ("client", op.client_version), ("schema", op.schema_hash)]
    for name, value in facts:
        if value:
            lines.append(f"  {name:<12}{value}")
    if op.error_code or op.error_message:
        lines.append(f"  {'ERROR':<12}{op.error_code or ''} {op.error_message or ''}".rstrip())
    for i, o in enumerate(op.operations):
        lines.append(f"  {f'op[{i}]':<12}{o.get('model') or ''}.{o.get('action') or ''}")
    for i, st in enumerate(op.sql, 1):
        params = f"  -- {st.param_count} params" if st.param_count else ""
        lines.append(f"  {f'sql[{i}]':<12}{st.sql}{params}")
    if shape := op.details.get("shape"):
        lines.append(f"  {'shape':<12}{shape}")
    if op.reason:
        lines.append(f"  {'note':<12}{op.reason}")
    return lines
