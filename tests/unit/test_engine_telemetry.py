"""Response telemetry: the header the sidecar sends upstream, the body the client gets back,
and what the server's spans and logs say (pdp_observe.engine.telemetry).

The strongest check uses real traffic: ``qpe72-capture`` is the stock Prisma 7 executor
answering requests whose ``X-Capture-Telemetry: error`` was widened to
``tracing, query, info, warn, error``; ``qpe72`` is the same workload unmodified. Stripping
the first must give the second, byte for byte, wherever the workload returned the same data.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pdp_observe.engine.telemetry import (
    GEN_ENGINE,
    GEN_QPE,
    CaptureAsk,
    EngineTelemetry,
    client_ask,
    merged_header,
    parse_telemetry,
    strip_extensions,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = FIXTURES / "recorded"
CONSTRUCTED = FIXTURES / "examples" / "constructed"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def compact(value: Any) -> bytes:
    """How the executor (JSON.stringify) and the engine (serde) write JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def constructed(name: str) -> bytes:
    return (CONSTRUCTED / name).read_bytes()


@cache
def recorded(stack: str) -> dict[int, dict[str, Any]]:
    rows = [json.loads(line) for line in (RECORDED / f"{stack}.jsonl").read_text().splitlines() if line]
    return {row["seq"]: row for row in rows}


def body_of(row: dict[str, Any]) -> bytes:
    return base64.b64decode(row["resp_body_b64"])


def data_part(body: bytes) -> bytes:
    """Everything before the top-level extensions member of a compact real body."""
    cut = body.rfind(b',"extensions":')
    return body[:cut] if cut >= 0 else body[: body.rindex(b'"extensions":')]


def hr_ns(value: list[int]) -> int:
    return value[0] * 1_000_000_000 + value[1]


# --------------------------------------------------------------------------- header


def test_no_header_is_none() -> None:
    assert client_ask(None, GEN_QPE) is None
    assert client_ask(None, GEN_ENGINE) is None


@pytest.mark.parametrize("generation", [GEN_ENGINE, GEN_QPE])
def test_client_ask_parses_like_the_server(generation: str) -> None:
    assert client_ask("tracing, info, query", generation) == CaptureAsk(True, frozenset({"info", "query"}), True)
    assert client_ask("error", generation) == CaptureAsk(False, frozenset({"error"}), True)
    assert client_ask(" ,error ,, warn,", generation) == CaptureAsk(False, frozenset({"error", "warn"}), True)
    assert client_ask("", generation) == CaptureAsk(False, frozenset(), True)
    for bad in ("Error", "error, bogus", "tracing,TRACING", "logs"):
        assert client_ask(bad, generation) == CaptureAsk(False, frozenset(), False), bad


def test_trace_level_is_engine_only() -> None:
    assert client_ask("trace", GEN_ENGINE) == CaptureAsk(False, frozenset({"trace"}), True)
    assert client_ask("trace", GEN_QPE).valid is False  # the executor answers 400
    assert client_ask("error, trace", GEN_QPE).valid is False


def test_unknown_generation_is_invalid_not_an_error() -> None:
    assert client_ask("error", "grpc").valid is False
    assert merged_header("error", "grpc") is None
    assert strip_extensions(b'{"extensions":{"logs":[]}}', None, "grpc") is None


@pytest.mark.parametrize(
    ("value", "generation", "expected"),
    [
        ("error", GEN_QPE, "error, tracing, query"),  # the Prisma 7 client default
        (None, GEN_QPE, "tracing, query"),
        (None, GEN_ENGINE, "tracing, query"),
        ("tracing, info", GEN_ENGINE, "tracing, info, query"),
        ("  info ,tracing", GEN_QPE, "info, tracing, query"),  # client order and spelling, trimmed
        ("query", GEN_ENGINE, "query, tracing"),
        ("tracing, query", GEN_QPE, None),  # nothing to add: the request is left alone
        ("query,tracing", GEN_ENGINE, None),
        ("tracing, info, query", GEN_QPE, None),
        ("error, bogus", GEN_QPE, None),  # invalid: the server must see the client's own header
        ("error, bogus", GEN_ENGINE, None),
        ("Error", GEN_ENGINE, None),
        ("trace", GEN_QPE, None),
        ("trace", GEN_ENGINE, "trace, tracing, query"),
    ],
)
def test_merged_header(value: str | None, generation: str, expected: str | None) -> None:
    assert merged_header(value, generation) == expected


def test_merged_header_never_sends_an_invalid_token() -> None:
    want = ("tracing", "trace", "query", "bogus", "query")
    assert merged_header("error", GEN_QPE, want) == "error, tracing, query"
    assert merged_header("error", GEN_ENGINE, want) == "error, tracing, trace, query"
    assert merged_header(None, GEN_QPE, ("trace",)) is None
    for client in (None, "", "error", "tracing", "info, query", "warn,error,debug", "debug"):
        for generation in (GEN_ENGINE, GEN_QPE):
            merged = merged_header(client, generation)
            if merged is None:
                continue
            ask = client_ask(merged, generation)
            assert ask is not None and ask.valid and ask.tracing and "query" in ask.levels
            own = client_ask(client, generation)
            if own is not None:
                assert own.levels <= ask.levels


# --------------------------------------------------------------------------- strip: real traffic


def capture_pairs() -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    capture, plain = recorded("qpe72-capture"), recorded("qpe72")
    pairs = []
    for seq in sorted(capture):
        cap, orig = capture[seq], plain[seq]
        assert (cap["method"], UUID.sub("<tx>", cap["path"])) == (orig["method"], UUID.sub("<tx>", orig["path"]))
        assert dict(cap["req_headers"])["X-Capture-Telemetry"] == "error"
        assert dict(cap["upstream_set_headers"])["X-Capture-Telemetry"] == "tracing, query, info, warn, error"
        pairs.append((seq, cap, orig))
    return pairs


def without_noise(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log elements minus what differs between two runs of the same step."""
    out = copy.deepcopy(logs)
    for entry in out:
        entry.pop("timestamp", None)
        entry.get("attributes", {}).pop("requestId", None)
    return out


def test_strip_real_capture_gives_the_unmodified_response() -> None:
    ask = client_ask("error", GEN_QPE)
    identical = 0
    for seq, cap, orig in capture_pairs():
        body, expected = body_of(cap), body_of(orig)
        out = strip_extensions(body, ask, GEN_QPE)
        assert out is not None, seq  # every response carried spans the client did not ask for
        assert data_part(out) == data_part(body), seq  # the data part is never touched
        got, want = json.loads(out), json.loads(expected)
        assert set(got["extensions"]) == {"logs"}, seq
        assert all(entry["level"] == "error" for entry in got["extensions"]["logs"]), seq
        kept_errors = [e for e in json.loads(body)["extensions"]["logs"] if e["level"] == "error"]
        assert got["extensions"]["logs"] == kept_errors, seq
        assert without_noise(got["extensions"]["logs"]) == without_noise(want["extensions"]["logs"]), seq
        if data_part(body) == data_part(expected) and not want["extensions"]["logs"]:
            assert out == expected, seq
            identical += 1
        elif data_part(body) == data_part(expected):
            # error logs carry their own timestamp/requestId; the rest is the same bytes
            assert out[: out.rindex(b'"extensions":')] == expected[: expected.rindex(b'"extensions":')], seq
    assert identical == 38  # all but the three transaction ids and the two error responses


def test_strip_real_capture_for_a_client_that_asked_nothing() -> None:
    for seq, cap, _ in capture_pairs():
        body = body_of(cap)
        out = strip_extensions(body, None, GEN_QPE)
        expected = json.loads(body)
        del expected["extensions"]
        assert out == compact(expected), seq  # no header: the executor adds no extensions at all


def test_strip_real_capture_keeps_what_was_asked() -> None:
    everything = client_ask("tracing, query, info, warn, error", GEN_QPE)
    tracing_only = client_ask("tracing", GEN_QPE)
    for seq, cap, _ in capture_pairs():
        body = body_of(cap)
        assert strip_extensions(body, everything, GEN_QPE) is None, seq
        out = strip_extensions(body, tracing_only, GEN_QPE)
        assert out is not None
        got, src = json.loads(out), json.loads(body)
        assert got["extensions"] == {"spans": src["extensions"]["spans"]}, seq
        assert data_part(out) == data_part(body)


def test_strip_real_tracing_stack_is_a_no_op_for_its_own_header() -> None:
    for row in recorded("qpe72-tracing").values():
        ask = client_ask(dict(row["req_headers"]).get("X-Capture-Telemetry"), GEN_QPE)
        assert strip_extensions(body_of(row), ask, GEN_QPE) is None


# --------------------------------------------------------------------------- strip: rules


def qpe_body(levels: list[str], spans: int = 2) -> dict[str, Any]:
    logs = [
        {"level": lvl, "spanId": "0" * 32 + "-" + "0" * 16, "timestamp": [1700000000, i], "message": f"m{i}",
         "attributes": {"n": i}}
        for i, lvl in enumerate(levels)
    ]
    span_list = [
        {"id": f"{i:032x}-{i:016x}", "parentId": None, "name": "prisma:accelerate:db_query", "kind": "client",
         "startTime": [1700000000, 0], "endTime": [1700000000, 1000000]}
        for i in range(spans)
    ]
    return {"data": {"x": 1.5, "s": "é\u2028"}, "extensions": {"logs": logs, "spans": span_list}}


def test_qpe_log_levels_are_discrete() -> None:
    src = qpe_body(["query", "info", "warn", "error", "debug", "query"])
    body = compact(src)
    for header, kept in [
        ("info", ["info"]),
        ("warn, error", ["warn", "error"]),
        ("query", ["query", "query"]),
        ("debug, tracing", ["debug"]),
    ]:
        out = strip_extensions(body, client_ask(header, GEN_QPE), GEN_QPE)
        expected = copy.deepcopy(src)
        expected["extensions"]["logs"] = [e for e in src["extensions"]["logs"] if e["level"] in kept]
        if "tracing" not in header:
            del expected["extensions"]["spans"]
        assert out == compact(expected), header


def test_qpe_empty_log_array_is_kept_when_a_level_was_asked() -> None:
    out = strip_extensions(compact(qpe_body(["query"], spans=0)), client_ask("error", GEN_QPE), GEN_QPE)
    assert out == b'{"data":{"x":1.5,"s":"\xc3\xa9\xe2\x80\xa8"},"extensions":{"logs":[]}}'


def test_qpe_extensions_only_member_becomes_empty_object() -> None:
    assert strip_extensions(b'{"extensions":{"logs":[],"spans":[]}}', None, GEN_QPE) == b"{}"
    assert strip_extensions(b'{"extensions":{"logs":[],"spans":[]}}\n', None, GEN_QPE) == b"{}\n"


def test_engine_gen2_keeps_both_keys() -> None:
    """6.1+ with --enable-telemetry-in-response writes {"traces":[],"logs":[]} even without a header."""
    src = json.loads(constructed("telemetry-6.1plus-response.json"))
    body = compact(src)
    empty = {"data": src["data"], "extensions": {"traces": [], "logs": []}}
    assert strip_extensions(body, None, GEN_ENGINE) == compact(empty)
    assert strip_extensions(body, client_ask("error", GEN_ENGINE), GEN_ENGINE) == compact(empty)
    assert strip_extensions(body, client_ask("bogus", GEN_ENGINE), GEN_ENGINE) == compact(empty)
    traced = {"data": src["data"], "extensions": {"traces": src["extensions"]["traces"], "logs": []}}
    assert strip_extensions(body, client_ask("tracing", GEN_ENGINE), GEN_ENGINE) == compact(traced)
    logged = {"data": src["data"], "extensions": {"traces": [], "logs": src["extensions"]["logs"]}}
    assert strip_extensions(body, client_ask("query", GEN_ENGINE), GEN_ENGINE) == compact(logged)
    assert strip_extensions(body, client_ask("tracing, query", GEN_ENGINE), GEN_ENGINE) is None
    assert strip_extensions(compact(empty), None, GEN_ENGINE) is None


def test_engine_gen1_without_a_valid_ask_has_no_extensions() -> None:
    src = json.loads(constructed("telemetry-legacy-4.10-6.0-response.json"))
    body = compact(src)
    bare = compact({"data": src["data"]})
    assert strip_extensions(body, None, GEN_ENGINE) == bare
    assert strip_extensions(body, client_ask("Error", GEN_ENGINE), GEN_ENGINE) == bare
    assert strip_extensions(body, client_ask("", GEN_ENGINE), GEN_ENGINE) == bare
    filtered = {"data": src["data"], "extensions": {"traces": [], "logs": []}}
    assert strip_extensions(body, client_ask("error", GEN_ENGINE), GEN_ENGINE) == compact(filtered)
    logged = {"data": src["data"], "extensions": {"traces": [], "logs": src["extensions"]["logs"]}}
    assert strip_extensions(body, client_ask("query", GEN_ENGINE), GEN_ENGINE) == compact(logged)
    assert strip_extensions(body, client_ask("tracing, query", GEN_ENGINE), GEN_ENGINE) is None


@pytest.mark.parametrize(
    "name",
    [
        "telemetry-6.1plus-response.json",
        "telemetry-legacy-4.10-6.0-response.json",
        "qpe-query-response-capture-query.json",
        "qpe-query-response-capture-tracing.json",
    ],
)
def test_pretty_printed_bodies_are_spliced_not_rewritten(name: str) -> None:
    body = constructed(name)
    generation = GEN_QPE if name.startswith("qpe") else GEN_ENGINE
    src = json.loads(body)
    data_end = body.index(b'"extensions"')
    for header in (None, "error", "query", "tracing"):
        out = strip_extensions(body, client_ask(header, generation), generation)
        if out is None:
            continue
        got = json.loads(out)
        assert got["data"] == src["data"]
        head = body[: body.rindex(b",", 0, data_end)]  # the data member, byte for byte
        assert out.startswith(head), header
        ask = client_ask(header, generation)
        for entry in got.get("extensions", {}).get("logs", []):
            assert ask is not None and entry["level"] in ask.levels
        if "extensions" in got and ask is not None and ask.tracing is False:
            assert got["extensions"].get("traces", []) == [] and "spans" not in got["extensions"]


# --------------------------------------------------------------------------- strip: tricky bodies


EXT = {"logs": [{"level": "query", "message": "Query"}, {"level": "error", "message": "boom"}], "spans": [{"id": "a"}]}
ERROR_ONLY = {"logs": [{"level": "error", "message": "boom"}]}


def strip_error(body: bytes) -> bytes | None:
    return strip_extensions(body, client_ask("error", GEN_QPE), GEN_QPE)


def test_string_containing_an_extensions_key() -> None:
    data = {"note": '","extensions":{"logs":[]}}', "k": '"extensions":'}
    out = strip_error(compact({"data": data, "extensions": EXT}))
    assert out == compact({"data": data, "extensions": ERROR_ONLY})
    assert strip_error(compact({"data": data})) is None  # only in a string: nothing to do
    assert parse_telemetry(compact({"data": data})) is None


def test_key_that_ends_in_an_escaped_quote_is_not_extensions() -> None:
    body = b'{"\\"extensions":{"logs":[{"level":"query"}]}}'
    assert strip_error(body) is None


def test_nested_extensions_inside_data_is_left_alone() -> None:
    data = {"extensions": {"logs": [{"level": "query"}], "spans": [1]}, "rows": [{"extensions": {}}]}
    out = strip_error(compact({"data": data, "extensions": EXT}))
    assert out == compact({"data": data, "extensions": ERROR_ONLY})
    assert strip_error(compact({"data": data})) is None
    assert strip_error(compact({"data": {"x": {"extensions": {"spans": []}}}})) is None
    # the nested member closes right before the end: only a malformed body can look like this
    assert strip_error(b'{"data":{"a":1,"extensions":{"spans":[]}}') is None


def test_extensions_inside_the_extensions() -> None:
    ext = {"logs": [{"level": "error", "attributes": {"extensions": {"logs": []}}}], "spans": []}
    out = strip_error(compact({"data": 1, "extensions": ext}))
    assert out == compact({"data": 1, "extensions": {"logs": ext["logs"]}})


def test_whitespace_everywhere() -> None:
    body = b'{ "data" : [ 1 , 2 ] ,\n "extensions" : { "logs" : [ {"level":"query"} ,\t{ "level" : "error" } ] , "spans" : [ ] } }\n'
    out = strip_error(body)
    assert out == b'{ "data" : [ 1 , 2 ] ,\n "extensions" : { "logs" : [ { "level" : "error" } ] } }\n'
    gone = strip_extensions(body, None, GEN_QPE)
    assert gone is not None and gone.startswith(b'{ "data" : [ 1 , 2 ] ')
    assert json.loads(gone) == {"data": [1, 2]}


def test_kept_elements_keep_their_exact_bytes() -> None:
    """Number and unicode spellings the stdlib would not reproduce survive the splice."""
    body = (
        b'{"data":{"n":1E5,"f":1.50,"u":"\\u00e9"},"extensions":{"logs":['
        b'{"level":"query","attributes":{"d":2.50E-3}},{"level":"error","attributes":{"big":123456789012345678901234567890,"u":"\\u00e9"}}'
        b'],"spans":[{"id":"x","v":1.0e0}]}}'
    )
    out = strip_error(body)
    assert out == (
        b'{"data":{"n":1E5,"f":1.50,"u":"\\u00e9"},"extensions":{"logs":['
        b'{"level":"error","attributes":{"big":123456789012345678901234567890,"u":"\\u00e9"}}]}}'
    )


def test_deeply_nested_values() -> None:
    deep = 0
    for _ in range(60):
        deep = [deep]
    ext = {"logs": [{"level": "query", "a": deep}, {"level": "error", "a": deep}], "spans": [{"a": deep}]}
    out = strip_error(compact({"data": deep, "extensions": ext}))
    assert out == compact({"data": deep, "extensions": {"logs": [ext["logs"][1]]}})
    pretty = json.dumps({"data": deep, "extensions": ext}, indent=1).encode()  # no compact fast path
    out = strip_error(pretty)
    assert out is not None and out.startswith(pretty[: pretty.index(b'"extensions"')])
    assert json.loads(out) == {"data": deep, "extensions": {"logs": [ext["logs"][1]]}}
    very_deep = b"[" * 5000 + b"]" * 5000  # past orjson's and the stdlib's nesting limits
    body = b'{"data":' + very_deep + b',"extensions":' + compact(EXT) + b"}"
    # cannot be proven to be JSON: passed through unedited rather than edited blind
    assert strip_error(body) in (None, b'{"data":' + very_deep + b',"extensions":' + compact(ERROR_ONLY) + b"}")
    telemetry = parse_telemetry(body)  # the extensions alone parse fine
    assert telemetry is not None and telemetry.shape == "qpe"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"extensions"',
        b'[{"extensions":{"logs":[]}}]',
        b'{"extensions":null}',
        b'{"extensions":[1]}',
        b'{"data":1,"extensions":{"logs":[]},"more":2}',  # not last: no real server writes this
        b'{"data":1,"extensions":{"logs":[],"logs":[{"level":"query"}],"spans":[]}}',  # duplicate keys
        b'{"data":1,"extensions":{"logs":[{"level":"query","m":"\xff"}],"spans":[]}}',  # not UTF-8
        b'{"data":1,"extensions":{"logs":[NaN],"spans":[]}}',
        b'{"data":1 "extensions":{"logs":[],"spans":[]}}',
        b'{"data":1,,"extensions":{"logs":[],"spans":[]}}',
        b'data,"extensions":{"logs":[],"spans":[]}}',
        b"\x00\x01\x02" * 100,
    ],
)
def test_not_editable_bodies(body: bytes) -> None:
    assert strip_error(body) is None
    assert strip_extensions(body, None, GEN_ENGINE) is None
    parse_telemetry(body)  # must not raise


def test_truncated_real_bodies() -> None:
    body = body_of(recorded("qpe72-capture")[2])
    ask = client_ask("error", GEN_QPE)
    for cut in range(len(body)):
        assert strip_extensions(body[:cut], ask, GEN_QPE) is None, cut
        assert parse_telemetry(body[:cut]) is None, cut


def test_corrupted_real_bodies_never_raise() -> None:
    body = bytearray(body_of(recorded("qpe72-capture")[30]))
    ask = client_ask("error", GEN_QPE)
    for i in range(0, len(body), 7):
        for junk in (b'"', b"}", b"]", b"\\", b"\xff", b"{"):
            mutated = bytes(body[:i] + junk + body[i + 1 :])
            out = strip_extensions(mutated, ask, GEN_QPE)
            assert out is None or json.loads(out) is not None
            parse_telemetry(mutated)


def test_bad_argument_types() -> None:
    assert strip_extensions("{}", None, GEN_QPE) is None  # type: ignore[arg-type]
    assert strip_extensions(None, None, GEN_QPE) is None  # type: ignore[arg-type]
    assert parse_telemetry(None) is None
    assert parse_telemetry("{}") is None  # type: ignore[arg-type]
    assert strip_error(bytearray(compact({"data": 1, "extensions": EXT}))) == compact({"data": 1, "extensions": ERROR_ONLY})


def test_huge_data_part() -> None:
    rows = [{"id": i, "title": f"post {i} ünïcode \"quoted\" [x] {{y}}", "v": i / 7} for i in range(40_000)]
    data = compact(rows)
    assert len(data) > 2_000_000
    body = b'{"data":' + data + b',"extensions":' + compact(EXT) + b"}"
    out = strip_error(body)
    assert out == b'{"data":' + data + b',"extensions":' + compact(ERROR_ONLY) + b"}"
    telemetry = parse_telemetry(body)
    assert telemetry is not None and telemetry.shape == "qpe" and len(telemetry.spans) == 0


# --------------------------------------------------------------------------- parse


def expected_sql(text: str) -> str:
    return text.split(" /* traceparent=")[0]


def test_parse_gen1() -> None:
    src = json.loads(constructed("telemetry-legacy-4.10-6.0-response.json"))["extensions"]
    t = parse_telemetry(constructed("telemetry-legacy-4.10-6.0-response.json"))
    assert t is not None and t.shape == "gen1"
    assert len(t.spans) == len(src["traces"])
    ids = {s["span_id"] for s in src["traces"]}
    root = next(s for s in src["traces"] if s["parent_span_id"] not in ids)
    assert t.engine_ms == pytest.approx((hr_ns(root["end_time"]) - hr_ns(root["start_time"])) / 1e6, abs=1e-9)
    assert [s.parent_id for s in t.spans] == [s["parent_span_id"] for s in src["traces"]]
    query_logs = [e for e in src["logs"] if e["level"] == "query"]
    assert [q.sql for q in t.sql] == [expected_sql(e["attributes"]["query"]) for e in query_logs]
    assert "traceparent" not in t.sql[0].sql
    assert [q.param_count for q in t.sql] == [len(json.loads(e["attributes"]["params"])) for e in query_logs]
    assert [q.ms for q in t.sql] == [e["attributes"]["duration_ms"] for e in query_logs]
    assert t.sql[0].span_id == query_logs[0]["span_id"]
    db_span = next(s for s in src["traces"] if s["span_id"] == query_logs[0]["span_id"])
    assert t.sql[0].start == pytest.approx(hr_ns(db_span["start_time"]) / 1e9)
    assert t.logs == []


def test_parse_gen2() -> None:
    body = constructed("telemetry-6.1plus-response.json")
    src = json.loads(body)["extensions"]
    t = parse_telemetry(body)
    assert t is not None and t.shape == "gen2"
    assert [s.id for s in t.spans] == [s["id"] for s in src["traces"]]
    root = next(s for s in src["traces"] if s["parentId"] is None)
    assert t.engine_ms == pytest.approx((hr_ns(root["endTime"]) - hr_ns(root["startTime"])) / 1e6, abs=1e-9)
    db = next(s for s in t.spans if s.name == "prisma:engine:db_query")
    raw_db = next(s for s in src["traces"] if s["name"] == "prisma:engine:db_query")
    assert db.attributes["db.query.text"] == raw_db["attributes"]["db.query.text"]
    assert db.start == pytest.approx(hr_ns(raw_db["startTime"]) / 1e9)
    assert db.kind == "client" and db.parent_id == root["id"]
    log = src["logs"][0]
    assert [(q.sql, q.ms, q.param_count, q.span_id) for q in t.sql] == [
        (log["attributes"]["query"], log["attributes"]["duration_ms"], len(json.loads(log["attributes"]["params"])), log["spanId"])
    ]


def test_parse_gen2_non_query_logs_and_gen1_quoted_levels() -> None:
    ext = {"traces": [], "logs": [
        {"spanId": "3", "target": "query_engine", "level": "info", "timestamp": [1700000000, 5], "attributes": {"message": "hello"}},
        {"spanId": "3", "target": "quaint::connector::metrics", "level": "query", "timestamp": [1700000000, 9],
         "attributes": {"query": "SELECT 1 /* traceparent='00-aa-bb-01' */", "params": "not json", "duration_ms": 0}},
    ]}
    t = parse_telemetry(compact({"data": {}, "extensions": ext}))
    assert t is not None and t.shape == "gen2" and t.engine_ms is None and t.spans == []
    assert t.logs == [{"level": "info", "message": "hello", "timestamp": pytest.approx(1700000000 + 5e-9)}]
    assert [(q.sql, q.ms, q.param_count) for q in t.sql] == [("SELECT 1", 0, None)]
    gen1 = {"traces": [], "logs": [{"span_id": "ab", "level": '"warn"', "timestamp": [1, 0], "attributes": {"message": "w"}}]}
    t1 = parse_telemetry(compact({"data": {}, "extensions": gen1}))
    assert t1 is not None and t1.shape == "gen1" and t1.logs == [{"level": "warn", "message": "w", "timestamp": 1.0}]


def test_parse_qpe_constructed() -> None:
    body = constructed("qpe-query-response-capture-query.json")
    log = json.loads(body)["extensions"]["logs"][0]
    t = parse_telemetry(body)
    assert t is not None and t.shape == "qpe" and t.spans == [] and t.engine_ms is None
    assert [(q.sql, q.ms, q.param_count, q.span_id) for q in t.sql] == [
        (log["attributes"]["query"], log["attributes"]["duration"], len(json.loads(log["attributes"]["params"])), log["spanId"])
    ]
    assert t.sql[0].start == pytest.approx(log["attributes"]["timestamp"] / 1000)

    body = constructed("qpe-query-response-capture-tracing.json")
    span = json.loads(body)["extensions"]["spans"][0]
    t = parse_telemetry(body)
    assert t is not None and t.shape == "qpe" and len(t.spans) == 1
    duration = (hr_ns(span["endTime"]) - hr_ns(span["startTime"])) / 1e6
    assert t.engine_ms == pytest.approx(duration, abs=1e-9)
    # no query logs: SQL from the db_query span, timed by the span
    assert [(q.sql, q.param_count, q.span_id) for q in t.sql] == [(span["attributes"]["db.query.text"], None, span["id"])]
    assert t.sql[0].ms == pytest.approx(duration, abs=1e-9)

    assert parse_telemetry(constructed("qpe-query-response-capture-error.json")) == EngineTelemetry(shape="qpe")
    assert parse_telemetry(constructed("qpe-query-request.json")) is None


def qpe_expected_engine_ms(spans: list[dict[str, Any]]) -> float | None:
    if not spans:
        return None
    roots = [s for s in spans if s["parentId"] is None]
    if len(roots) == 1:
        return (hr_ns(roots[0]["endTime"]) - hr_ns(roots[0]["startTime"])) / 1e6
    return (max(hr_ns(s["endTime"]) for s in spans) - min(hr_ns(s["startTime"]) for s in spans)) / 1e6


@pytest.mark.parametrize("stack", ["qpe72-capture", "qpe72-tracing", "qpe72"])
def test_parse_real_executor_traffic(stack: str) -> None:
    """All-zero ids and a span that names itself as its parent (qpe72-capture) are handled."""
    seen_sql = 0
    for seq, row in sorted(recorded(stack).items()):
        body = body_of(row)
        ext = json.loads(body)["extensions"]
        t = parse_telemetry(body)
        assert t is not None and t.shape == "qpe", seq
        spans = ext.get("spans", [])
        assert len(t.spans) == len(spans)
        assert [s.name for s in t.spans] == [s["name"] for s in spans]
        expected_ms = qpe_expected_engine_ms(spans)
        if expected_ms is None:
            assert t.engine_ms is None
        else:
            assert t.engine_ms == pytest.approx(expected_ms, abs=1e-6), seq
        query_logs = [e for e in ext["logs"] if e["message"] == "Query"]
        if query_logs:
            assert [q.sql for q in t.sql] == [e["attributes"]["query"] for e in query_logs]
            assert [q.param_count for q in t.sql] == [len(json.loads(e["attributes"]["params"])) for e in query_logs]
            assert [q.ms for q in t.sql] == [e["attributes"]["duration"] for e in query_logs]
        else:
            db = sorted((s for s in spans if s["name"].endswith("db_query")), key=lambda s: hr_ns(s["startTime"]))
            assert [q.sql for q in t.sql] == [s["attributes"]["db.query.text"] for s in db]
        seen_sql += len(t.sql)
        others = [e for e in ext["logs"] if e["message"] != "Query"]
        assert [(entry["level"], entry["message"]) for entry in t.logs] == [(e["level"], e["message"]) for e in others]
    assert seen_sql >= (40 if stack != "qpe72" else 0)


def test_parse_real_capture_transaction_with_self_parented_span() -> None:
    body = body_of(recorded("qpe72-capture")[2])
    ext = json.loads(body)["extensions"]
    assert any(s["parentId"] == s["id"] for s in ext["spans"])  # the real-world oddity
    t = parse_telemetry(body)
    assert t is not None
    start = min(hr_ns(s["startTime"]) for s in ext["spans"])
    end = max(hr_ns(s["endTime"]) for s in ext["spans"])
    assert t.engine_ms == pytest.approx((end - start) / 1e6, abs=1e-9)  # several parentId:null roots
    assert [q.sql for q in t.sql][-1] == "COMMIT"
    assert all(q.span_id is None for q in t.sql)  # all-zero ids identify nothing


def test_parse_real_error_log() -> None:
    body = body_of(recorded("qpe72-capture")[29])
    error = next(e for e in json.loads(body)["extensions"]["logs"] if e["level"] == "error")
    t = parse_telemetry(body)
    assert t is not None and t.logs == [
        {"level": "error", "message": error["message"], "timestamp": pytest.approx(hr_ns(error["timestamp"]) / 1e9)}
    ]


def test_parse_without_extensions() -> None:
    assert parse_telemetry(b'{"data":{"id":1}}') is None
    assert parse_telemetry(b"") is None
    assert parse_telemetry(b'{"data":1,"extensions":{"logs":[]},"x":2}') == EngineTelemetry(shape="qpe")  # not last


def test_to_dict_round_trip() -> None:
    for body in (
        body_of(recorded("qpe72-capture")[2]),
        body_of(recorded("qpe72-capture")[29]),
        constructed("telemetry-legacy-4.10-6.0-response.json"),
        constructed("telemetry-6.1plus-response.json"),
    ):
        t = parse_telemetry(body)
        assert t is not None
        plain = json.loads(json.dumps(t.to_dict()))
        assert list(plain) == ["shape", "engine_ms", "spans", "sql", "logs"]
        for span in plain["spans"]:
            assert list(span) == ["id", "parent_id", "name", "start", "end", "kind", "attributes"]
        for q in plain["sql"]:
            assert list(q) == ["sql", "ms", "param_count", "span_id", "start"]
        for entry in plain["logs"]:
            assert list(entry) == ["level", "message", "timestamp"]
        assert EngineTelemetry.from_dict(plain) == t


@pytest.mark.parametrize("junk", [None, 3, "x", [], {"spans": [1, {"start": "a"}], "sql": [None], "logs": "no"}])
def test_from_dict_tolerates_junk(junk: Any) -> None:
    t = EngineTelemetry.from_dict(junk)
    assert t.spans == [] and t.engine_ms is None
