"""The live list's columns: what each shows for a row, its width, and what it sorts by.

Pure functions over the stable ``ls --json`` row dicts, shared by the list widget, the
transaction view and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from rich.text import Text

from ..views import human_bytes

Row = dict[str, Any]

SORT_KEYS = ("time", "ms", "engine", "status", "code", "model", "action", "sqls", "size", "txn")
"""Every sort the sources accept, in the order ``s`` cycles through them."""


@dataclass(frozen=True, slots=True)
class Column:
    """One list column; ``width`` 0 takes the space the others leave."""

    key: str
    title: str
    width: int
    sort: str | None
    right: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("time", "TIME", 12, "time"),
    Column("op", "OPERATION", 0, "model"),
    Column("status", "STATUS", 12, "status"),
    Column("ms", "MS", 9, "ms", right=True),
    Column("engine", "ENGINE", 9, "engine", right=True),
    Column("sqls", "SQL", 4, "sqls", right=True),
    Column("txn", "TXN", 9, "txn"),
    Column("pool", "POOL", 7, None, right=True),
    Column("size", "SIZE", 8, "size", right=True),
)
GAP = 1
MIN_FLEX = 16


def layout(width: int) -> list[tuple[Column, int, int]]:
    """``(column, x, width)`` for a list ``width`` cells wide (the flex column never < 16)."""
    fixed = sum(c.width for c in COLUMNS if c.width) + GAP * (len(COLUMNS) - 1)
    flex = max(MIN_FLEX, width - fixed)
    out, x = [], 0
    for col in COLUMNS:
        w = col.width or flex
        out.append((col, x, w))
        x += w + GAP
    return out


def column_at(width: int, x: int) -> Column | None:
    for col, start, w in layout(width):
        if start <= x < start + w + GAP:
            return col
    return None


def fmt_clock(ts: float | None, tz: tzinfo | None) -> str:
    if ts is None:
        return "-"
    dt = datetime.fromtimestamp(ts, tz)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.1f}"


def operation_label(row: Row) -> str:
    """``User.findMany``, ``tx_start``, else ``POST /path``: what a person calls the request."""
    model, action, kind = row.get("model"), row.get("action"), row.get("kind")
    if model and action:
        return f"{model}.{action}"
    if action:
        return str(action)
    if kind == "batch":
        ops = row.get("operations") or []
        return f"batch({len(ops)})" if ops else "batch"
    if kind and kind not in ("other", "query"):
        return str(kind)
    return f"{row.get('method', '?')} {row.get('path', '')}"


_FAILURE_SHORT = {"upstream_refused": "refused", "upstream_connect_timeout": "conn timeout",
                  "upstream_read_timeout": "read timeout", "upstream_reset": "reset",
                  "upstream_error": "upstream err", "client_abort": "client abort"}


def status_label(row: Row) -> str:
    if row.get("failure"):
        return _FAILURE_SHORT.get(row["failure"], str(row["failure"]))
    status = row.get("status")
    text = "-" if status is None else str(status)
    if row.get("error_code"):
        text += f" {row['error_code']}"
    return text


def status_style(row: Row) -> str:
    """Colour of a row by outcome: failure, 5xx, 4xx (or a Prisma error), 2xx, unfinished."""
    status = row.get("status")
    if row.get("failure"):
        return "bold magenta"
    if status is None:
        return "dim"
    if status >= 500:
        return "red"
    if status >= 400 or row.get("error_code"):
        return "yellow"
    if status >= 300:
        return "cyan"
    return "green"


def duration_style(ms: float | None, thresholds: tuple[float | None, float | None]) -> str:
    """``bold red`` at or over p99, ``yellow`` at or over p90 (of the current filter)."""
    p90, p99 = thresholds
    if ms is None:
        return ""
    if p99 is not None and ms >= p99:
        return "bold red"
    if p90 is not None and ms >= p90:
        return "yellow"
    return ""


def pool_label(row: Row) -> str:
    busy, size = row.get("pool_busy"), row.get("pool_size")
    if busy is not None and size is not None:
        return f"{busy}/{size}"
    if busy is not None:
        return str(busy)
    return "-"


def cells(row: Row, tz: tzinfo | None) -> dict[str, str]:
    """Cell text per column key."""
    size = row.get("resp_bytes")
    txn = row.get("txn")
    sqls = row.get("sql_count", len(row.get("sql") or []))
    return {
        "time": fmt_clock(row.get("ts"), tz),
        "op": operation_label(row),
        "status": status_label(row),
        "ms": fmt_ms(row.get("duration_ms")),
        "engine": fmt_ms(row.get("engine_ms")),
        "sqls": str(sqls) if sqls else "-",
        "txn": txn[:8] if txn else "-",
        "pool": pool_label(row),
        "size": human_bytes(size) if size is not None else "-",
    }


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text.rjust(width) if right else text.ljust(width)


def render_row(row: Row, width: int, tz: tzinfo | None,
               thresholds: tuple[float | None, float | None] = (None, None)) -> Text:
    values = cells(row, tz)
    st = status_style(row)
    styles = {"status": st, "op": st if st in ("bold magenta", "red") else "",
              "ms": duration_style(row.get("duration_ms"), thresholds), "time": "dim"}
    text = Text(no_wrap=True, overflow="crop")
    for i, (col, _x, w) in enumerate(layout(width)):
        text.append(" " * GAP if i else "")
        text.append(_fit(values[col.key], w, col.right), styles.get(col.key, ""))
    return text


def render_header(width: int, sort: str, desc: bool) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for i, (col, _x, w) in enumerate(layout(width)):
        title = col.title
        if col.sort is not None and col.sort == sort:
            title += " ▼" if desc else " ▲"
        text.append(" " * GAP if i else "")
        text.append(_fit(title, w, col.right), "bold" if col.sort == sort else "")
    return text
