"""The TUI's pure renderings: list cells, timing segments, the waterfall, curl and HAR."""

from __future__ import annotations

import io
import json
from datetime import UTC
from pathlib import Path

from rich.console import Console

from pdp_observe.query import Query
from pdp_observe.tui import detail_view as view
from pdp_observe.tui.columns import (
    COLUMNS,
    column_at,
    layout,
    render_header,
    render_row,
    status_label,
)
from pdp_observe.tui.export import curl_command, har_entry, mark_redacted
from pdp_observe.tui.screens.operations import operation_filter
from tests.tui.seed import ex_id


def plain(renderable: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_layout_fills_the_width_and_clicks_map_to_columns():
    cols = layout(120)
    last_col, last_x, last_w = cols[-1]
    assert last_x + last_w == 120 and last_col.key == "size"
    assert column_at(120, 0).key == "time" and column_at(120, 20).key == "op"
    assert column_at(120, last_x).key == "size"
    assert len(render_header(120, "ms", True).plain) == 120 and "MS ▼" in render_header(120, "ms", True).plain
    assert len(COLUMNS) == 9


def test_row_cells_and_status_words():
    row = {"ts": 1_767_268_800.5, "model": "User", "action": "findMany", "status": 400, "error_code": "P2002",
           "duration_ms": 1234.5, "engine_ms": 3.25, "sql": ["SELECT 1"], "txn": "abcdef0123", "pool_busy": 3,
           "pool_size": 10, "resp_bytes": 2048}
    text = render_row(row, 120, UTC, (100.0, 1000.0)).plain
    for part in ("12:00:00.500", "User.findMany", "400 P2002", "1234", "3.2", "abcdef01", "3/10", "2.0KiB"):
        assert part in text
    assert status_label({"failure": "upstream_read_timeout"}) == "read timeout"
    assert status_label({"status": None}) == "-"
    assert "POST /health" in render_row({"method": "POST", "path": "/health", "kind": "other"}, 120, UTC).plain


def test_detail_views_on_a_stored_exchange(store: Path):
    q = Query(str(store))
    try:
        d = q.exchange(ex_id(13))
        member = q.exchange(ex_id(31))
        failed = q.exchange(ex_id(21))
    finally:
        q.close()
    names = [n for n, _ in view.timing_segments(d)]
    assert names == ["sidecar → upstream", "upstream queue", "engine", "SQL", "response"]
    assert abs(sum(ms for _, ms in view.timing_segments(d)) - 5000.0) < 1.0
    spans = view.trace_spans(d)
    assert [s[1] for s in spans[:3]] == ["sidecar (hop)", "upstream", "prisma:engine:query"]
    assert spans[3][0] == 3  # a child of the engine's root span
    assert view.to_exchange(d).operation.error_code == "P2024"
    assert "exchange 2 of 4" in plain(view.facts(member, UTC))
    assert "PRESSURE    P2024" in plain(view.overview(d, UTC)) and "UPDATE" in plain(view.request_view(d))
    assert "no timings" not in view.timing_bar(d, 60).plain
    assert view.response_json(failed) is None and view.trace_spans(failed)[0][1] == "sidecar (hop)"


def test_engine_spans_on_another_clock_are_lined_up():
    d = {"timings": {"received": 1000.0, "upstream_connected": 1000.001, "first_byte": 1000.05, "done": 1000.051},
         "telemetry": {"engine": {"spans": [{"id": "r", "parent_id": None, "name": "root", "start": 5.0, "end": 5.04}],
                                  "sql": []}}}
    spans = view.trace_spans(d)
    root = next(s for s in spans if s[1] == "root")
    assert root[2] == 1000.001 and abs(root[3] - 1000.041) < 1e-9


def test_curl_and_har_mark_and_keep_redactions(store: Path):
    q = Query(str(store))
    try:
        d = q.exchange(ex_id(5))
    finally:
        q.close()
    cmd = curl_command(d)
    assert "<redacted:3fa1c2>" in cmd and "[REDACTED" not in cmd and "Content-Length" not in cmd
    assert mark_redacted("/q?token=REDACTED-abcdef") == "/q?token=<redacted:abcdef>"
    entry = har_entry(d)
    assert entry["request"]["postData"]["mimeType"] == "application/json"
    assert json.loads(entry["request"]["postData"]["text"])["modelName"] == "Comment"
    assert entry["response"]["status"] == 200 and entry["startedDateTime"] == "2026-01-01T12:00:05.000Z"
    assert {"name": "Authorization", "value": "[REDACTED:3fa1c2]"} in entry["request"]["headers"]


def test_operation_filter_quotes_what_needs_it():
    assert operation_filter({"fingerprint": "e04d34845efe51cd"}) == "fp:e04d34845efe51cd"
    assert operation_filter({"kind": "tx_start"}) == "kind:tx_start"
    assert operation_filter({"model": "A B", "action": "x"}) == 'model:"A B" action:x'
