"""W3C trace context on the hop: read the client's ``traceparent``, name the sidecar's span.

The sidecar is a server span in the client's trace (or the root of a new one). It forwards a
``traceparent`` naming that span, so an engine that honours it (≤ 6.0) parents its spans on
it; for the others (6.1+, the Prisma 7 executor) the recorder re-parents the spans they
return (docs/protocols.md §D). Runs on the request path: a regex match and random bits.
"""

from __future__ import annotations

import random
import re

_TP = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_rand = random.Random()  # ids need uniqueness, not secrecy


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace_id, parent span id, sampled) of a valid header, else None.

    Prisma clients send the non-W3C placeholder ``00-10-10-00`` with tracing off (and with
    it on but no active span); that, all-zero ids and version ``ff`` mean "no context".
    """
    if not value:
        return None
    m = _TP.fullmatch(value.strip().lower())
    if m is None:
        return None
    version, trace_id, span_id, flags = m.groups()
    if version == "ff" or (version == "00" and len(value.strip()) != 55):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def new_span_id() -> str:
    return "%016x" % (_rand.getrandbits(64) or 1)


def new_trace_id() -> str:
    return "%032x" % (_rand.getrandbits(128) or 1)


def start_span(client_value: str | None) -> tuple[str, str, str | None, bool]:
    """(trace_id, span_id, parent_span_id, sampled) for the sidecar's span of one request.

    Without a client context the sidecar starts a trace and marks it *not sampled* on the
    wire: engines append ``/* traceparent='…' */`` to every SQL statement of a sampled
    request, which would make each statement's text unique and defeat the database's
    statement caches — an effect on the app the sidecar must not have. The sidecar still
    records (and, when configured, exports) its own spans.
    """
    parsed = parse_traceparent(client_value)
    if parsed is None:
        return new_trace_id(), new_span_id(), None, False
    return parsed[0], new_span_id(), parsed[1], parsed[2]


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
