"""The W3C traceparent the sidecar reads from clients and forwards upstream."""

from __future__ import annotations

import re

import pytest

from pdp_observe.proxy import telemetry_generation
from pdp_observe.tracecontext import format_traceparent, parse_traceparent, start_span

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_valid_header_is_continued_as_a_child() -> None:
    trace_id, span_id, parent, sampled = start_span(VALID)
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and parent == "00f067aa0ba902b7" and sampled
    assert re.fullmatch(r"[0-9a-f]{16}", span_id) and span_id != parent
    assert format_traceparent(trace_id, span_id, sampled) == f"00-{trace_id}-{span_id}-01"


@pytest.mark.parametrize("value", [
    None, "", "00-10-10-00",  # Prisma's placeholder with tracing off (recorded traffic)
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "garbage",
])
def test_no_usable_context_starts_an_unsampled_trace(value: str | None) -> None:
    assert parse_traceparent(value) is None
    trace_id, span_id, parent, sampled = start_span(value)
    assert parent is None and not sampled  # unsampled: engines add no SQL comment
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32


def test_unsampled_client_context_stays_unsampled() -> None:
    assert start_span(VALID[:-2] + "00")[3] is False


@pytest.mark.parametrize(("method", "path", "kind", "want"), [
    ("POST", "/", "auto", "engine"),
    ("POST", "/query", "auto", "qpe"),
    ("POST", "/transaction/abc/query", "auto", "qpe"),
    ("POST", "/6.19.0/48021bfb/graphql", "auto", "engine"),
    ("POST", "/6.19.0/48021bfb/itx/abc/commit", "auto", "engine"),
    ("POST", "/6.19.0/48021bfb/transaction/start", "auto", "engine"),
    ("POST", "/transaction/start", "auto", None),  # ambiguous until the upstream is known
    ("POST", "/transaction/start", "qpe", "qpe"),
    ("POST", "/transaction/abc/commit", "engine", "engine"),
    ("GET", "/status", "engine", None),
    ("POST", "/metrics", "engine", None),
])
def test_capture_header_dialect_follows_the_route(method: str, path: str, kind: str, want: str | None) -> None:
    assert telemetry_generation(method, path, kind) == want
