"""Exchanges out of the TUI: as a curl command, a HAR 1.2 file or JSON lines.

Secrets were redacted when the exchange was captured, so nothing here can leak one; what
was redacted is marked ``<redacted:3fa1c2>`` so a person sees what to fill in before
running a copied command.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .. import __version__
from .source import Source

Detail = dict[str, Any]

_MASKS = re.compile(r"\[REDACTED:([0-9a-f]{6})\]|REDACTED-([0-9a-f]{6})")
_SKIP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding",
                           "keep-alive", "te", "upgrade", "proxy-connection"})
EXPORT_PAGE = 200


def mark_redacted(text: str) -> str:
    """``[REDACTED:3fa1c2]`` / ``REDACTED-3fa1c2`` → ``<redacted:3fa1c2>``."""
    return _MASKS.sub(lambda m: f"<redacted:{m.group(1) or m.group(2)}>", text)


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def url_of(d: Detail) -> str:
    base = (d.get("upstream") or "http://UPSTREAM").rstrip("/")
    return base + ((d.get("request") or {}).get("path") or "/")


def curl_command(d: Detail) -> str:
    """A curl command that sends the captured request again (redacted values marked)."""
    rq = d.get("request") or {}
    lines = []
    body = (rq.get("body") or {})
    text = body.get("text") or ""
    if any(_MASKS.search(v) for _, v in rq.get("headers") or ()) or _MASKS.search(text + (rq.get("path") or "")):
        lines.append("# secrets were redacted when this was captured: replace each <redacted:…> before running")
    if body.get("truncated"):
        lines.append(f"# the body was truncated at capture: {len(text.encode())} of {body.get('size')} bytes kept")
    parts = [f"curl -X {rq.get('method', 'GET')} {_sh(mark_redacted(url_of(d)))}"]
    for k, v in rq.get("headers") or ():
        if k.lower() not in _SKIP_HEADERS:
            parts.append(f"-H {_sh(mark_redacted(f'{k}: {v}'))}")
    if text:
        parts.append(f"--data-raw {_sh(mark_redacted(text))}")
    lines.append(" \\\n  ".join(parts))
    return "\n".join(lines)


# ---- HAR 1.2 ---------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _har_headers(headers: Any) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers or ()]


def _ctype(headers: Any) -> str:
    return next((v for k, v in headers or () if k.lower() == "content-type"), "")


def _span(a: float | None, b: float | None) -> float:
    return -1 if a is None or b is None else round(max(0.0, (b - a) * 1000.0), 3)


def har_entry(d: Detail) -> dict[str, Any]:
    """One HAR 1.2 ``entries[]`` object; pdp_observe's own facts under ``_pdp``."""
    rq, rs, t = d.get("request") or {}, d.get("response"), d.get("timings") or {}
    received = t.get("received") or 0.0
    send = _span(received, t.get("upstream_connected"))
    wait = _span(t.get("upstream_connected") or received, t.get("first_byte"))
    receive = _span(t.get("first_byte"), t.get("done"))
    rq_body = rq.get("body") or {}
    request: dict[str, Any] = {
        "method": rq.get("method"), "url": url_of(d), "httpVersion": f"HTTP/{rq.get('http_version', '1.1')}",
        "cookies": [], "headers": _har_headers(rq.get("headers")),
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(rq.get("path") or "").query)],
        "headersSize": -1, "bodySize": rq_body.get("size", 0),
    }
    if rq_body.get("text"):
        request["postData"] = {"mimeType": _ctype(rq.get("headers")), "text": rq_body["text"]}
    if rs:
        rs_body = rs.get("body") or {}
        content: dict[str, Any] = {"size": rs_body.get("size", 0), "mimeType": _ctype(rs.get("headers")),
                                   "text": rs_body.get("text") or ""}
        if rs_body.get("truncated"):
            content["comment"] = "truncated at capture"
        response = {"status": rs.get("status"), "statusText": rs.get("reason") or "",
                    "httpVersion": f"HTTP/{rq.get('http_version', '1.1')}", "cookies": [],
                    "headers": _har_headers(rs.get("headers")), "content": content, "redirectURL": "",
                    "headersSize": -1, "bodySize": rs_body.get("size", 0)}
    else:
        response = {"status": 0, "statusText": d.get("failure") or "no response", "httpVersion": "",
                    "cookies": [], "headers": [], "content": {"size": 0, "mimeType": ""}, "redirectURL": "",
                    "headersSize": -1, "bodySize": -1, "_error": d.get("failure_detail")}
    op = d.get("operation") or {}
    total = _span(received, t.get("done"))
    return {
        "startedDateTime": _iso(received), "time": max(0, total),
        "request": request, "response": response, "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
                    "send": max(0, send), "wait": max(0, wait), "receive": max(0, receive)},
        "serverIPAddress": "", "comment": f"pdp-observe exchange {d.get('id')}",
        "_pdp": {"id": d.get("id"), "model": op.get("model"), "action": op.get("action"),
                 "txn": op.get("txn"), "error_code": op.get("error_code"), "failure": d.get("failure"),
                 "fingerprint": op.get("fingerprint"), "engine_ms": (((d.get("telemetry") or {}).get("engine"))
                                                                     or {}).get("engine_ms")},
    }


def format_for(path: str) -> str:
    return "jsonl" if path.lower().endswith((".jsonl", ".ndjson", ".json-lines")) else "har"


Progress = Callable[[int, int], Awaitable[None] | None]


async def export(source: Source, path: str, *, filter: str = "", fmt: str | None = None,
                 progress: Progress | None = None) -> int:
    """Write every exchange the filter matches (oldest first) to ``path``; returns how many.

    Streams: one page of rows and one exchange at a time, written to ``path + ".part"`` and
    renamed at the end, so a cancelled export leaves no half file under the asked-for name.
    Exchanges recorded after the export started are not included (the export ends).
    """
    fmt = fmt or format_for(path)
    tmp = path + ".part"
    count = 0
    wanted: int | None = None
    try:
        # a local file with buffered writes: blocking the loop for microseconds per entry
        with open(tmp, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            if fmt == "har":
                out.write('{"log":{"version":"1.2","creator":{"name":"pdp-observe","version":'
                          + json.dumps(__version__) + '},"pages":[],"entries":[\n')
            offset = 0
            while True:
                page = await source.page(filter=filter, sort="time", desc=False, offset=offset, limit=EXPORT_PAGE)
                total = wanted = int(page.get("total") or 0) if wanted is None else wanted
                rows = (page.get("rows") or [])[:max(0, total - offset)]
                for row in rows:
                    d = await source.exchange(row["id"])
                    if fmt == "har":
                        out.write((",\n" if count else "") + json.dumps(har_entry(d), ensure_ascii=False))
                    else:
                        out.write(json.dumps(d, ensure_ascii=False) + "\n")
                    count += 1
                if progress is not None:
                    res = progress(count, total)
                    if res is not None:
                        await res
                offset += len(rows)
                if not rows or offset >= total:
                    break
            if fmt == "har":
                out.write("\n]}}\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return count
