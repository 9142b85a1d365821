"""Garbage in, an Operation out: decode never raises, and says why it could not decode."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from pdp_observe.exchange import Operation
from pdp_observe.protocol import decode

HASH = "48021bfbec26560b6b25e6e125df891aa55bea4608599fffd5d3985f71682a0c"
UUID = "ac98fd9b-e789-4842-8a9d-bf1d934e3c71"
PROTOCOLS = {"engine", "engine-json", "engine-graphql", "dataproxy", "qpe", "unknown"}
QUERY_PATHS = ("/", "/query", f"/transaction/{UUID}/query", f"/6.19.0/{HASH}/graphql", f"/6.19.0/{HASH}/itx/abc/graphql")
OTHER_PATHS = (
    "/transaction/start", f"/transaction/{UUID}/commit", "/transaction/cabc/rollback", "/transaction/x/y/z",
    f"/6.19.0/{HASH}/schema", f"/6.19.0/{HASH}/transaction/start", f"/6.19.0/{HASH}/itx/abc/commit",
    f"/6.19.0/{HASH}/nope", "/connection-info", "/metrics?format=json", "/status", "/nope", "", "//", "/?a=b",
)


def nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


GARBAGE: dict[str, bytes] = {
    "empty": b"",
    "open brace": b"{",
    "cut json": b'{"modelName":"User","action":"findMa',
    "non utf8": b"\xff\xfe\x00\x81garbage",
    "non utf8 in string": b'{"action":"findMany","modelName":"\xff\xfe"}',
    "very deep array": nested(100_000),
    "deep but parseable": nested(900),
    "deep objects": b'{"a":' * 900 + b"1" + b"}" * 900,
    "null": b"null",
    "number": b"42",
    "string": b'"InternalDataProxyError"',
    "array": b"[1, 2]",
    "batch not a list": b'{"batch": 5}',
    "batch of junk": b'{"batch": [1, "x", null, {"query": 5}, {"action": []}]}',
    "wrong types": b'{"action": 5, "modelName": [], "query": "x"}',
    "graphql cut": b'{"query": "query { findManyUser(where: {", "variables": {}}',
    "graphql deep": json.dumps({"query": "{" * 5000 + "}" * 5000, "variables": {}}).encode(),
    "graphql deep values": json.dumps({"query": "{ findManyUser(where: " + "[" * 5000 + "]" * 5000 + ") { id } }"}).encode(),
    "graphql huge number": json.dumps({"query": "{ findManyUser(take: " + "9" * 5000 + ") { id } }"}).encode(),
    "json huge number": b'{"modelName":"User","action":"findMany","query":{"arguments":{"take":' + b"9" * 5000 + b"}}}",
    "graphql unknown field": b'{"query": "{ hello }", "variables": {}}',
    "graphql junk chars": b'{"query": "query { ~~~ }", "variables": {}}',
    "plan wrong types": b'{"model": 1, "operation": {}, "plan": [[[{"type": "templateSql", "fragments": 5, "args": {}}]]]}',
    "plan bad fragments": (
        b'{"model":"User","operation":"findMany","plan":{"type":"query","args":{"type":"templateSql",'
        b'"fragments":[{"type":"parameterTupleList"},{"type":"zzz"},null,7,{"type":"parameterTuple"}],'
        b'"placeholderFormat":{"prefix":7,"hasNumbering":"x"},"args":[5]}}}'
    ),
    "plan deep": b'{"model":"User","operation":"findMany","plan":' + nested(900, '{"type":"rawSql","sql":"SELECT 1","args":[]}') + b"}",
    "tx options wrong": b'{"max_wait": "x", "timeout": null, "isolation_level": 5, "maxWait": []}',
    "engine errors junk": b'{"errors": [1, {"user_facing_error": "x"}, {"user_facing_error": {"error_code": 5}}]}',
    "batch result junk": b'{"batchResult": [null, {"errors": 5}, {"errors": [{"user_facing_error": {"error_code": "P2002"}}]}]}',
    "dataproxy junk": b'{"EngineNotStarted": {"reason": {"KnownEngineStartupError": 5}}}',
    "misrouted junk": b'{"InteractiveTransactionMisrouted": {"reason": [1]}}',
    "deep meta": b'{"code":"P2002","error":"x","meta":' + nested(900) + b"}",
    "huge": b'{"modelName":"User","action":"createMany","query":{"arguments":{"data":[' + b",".join([b'{"a":1}'] * 5000) + b"]}}}",
}


def serialisable(op: Operation) -> str:
    """The Operation must survive the store's JSON serialisation, whatever it decoded."""
    return json.dumps(dataclasses.asdict(op))


def check(op: Any) -> None:
    assert isinstance(op, Operation)
    assert op.protocol in PROTOCOLS
    assert not (op.reason or "").startswith("decoder error"), op.reason  # the last-resort guard never fired
    serialisable(op)


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_request_body_never_raises(name: str) -> None:
    body = GARBAGE[name]
    for path in QUERY_PATHS + OTHER_PATHS:
        for method in ("POST", "PUT", "GET"):
            check(decode(method, path, [("X-transaction-id", "x")], body, 200, [], b'{"data":{}}'))
            check(decode(method, path, [], body, None, None, None, truncated=True))


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_response_body_never_raises(name: str) -> None:
    body = GARBAGE[name]
    request = b'{"modelName":"User","action":"findMany","query":{"selection":{"$scalars":true}}}'
    for path in QUERY_PATHS + OTHER_PATHS:
        for status in (200, 400, 404, 409, 422, 500, 504):
            check(decode("POST", path, [], request, status, [("prisma-transaction-id", "x")], body))


@pytest.mark.parametrize("name", ["empty", "open brace", "cut json", "non utf8", "very deep array", "null", "array", "wrong types",
                                  "batch not a list", "graphql cut", "graphql deep", "graphql unknown field", "graphql junk chars"])
def test_undecodable_query_requests_say_why(name: str) -> None:
    for path in ("/", f"/6.19.0/{HASH}/graphql"):
        op = decode("POST", path, [], GARBAGE[name], 200, [], b"")
        assert op.reason, (name, path)


@pytest.mark.parametrize("name", ["empty", "open brace", "non utf8", "very deep array", "null", "wrong types", "plan wrong types"])
def test_undecodable_executor_requests_say_why(name: str) -> None:
    op = decode("POST", "/query", [], GARBAGE[name], 200, [], b"")
    assert op.protocol == "qpe" and op.reason, name


@pytest.mark.parametrize(
    "args",
    [
        (None, None, None, None),
        (5, 7, "junk", b"{}"),
        ("POST", "/", [("a",), ("b", 1), 5, None], "text body"),
        ("POST", "/", "not a list", bytearray(b"{}")),
        ("POST", "/query", [(b"bytes", b"bytes")], memoryview(b"{}")),
    ],
)
def test_wrong_argument_types_never_raise(args: tuple[Any, ...]) -> None:
    method, path, headers, body = args
    check(decode(method, path, headers, body, "200", {"x": 1}, 5))  # type: ignore[arg-type]


def test_huge_graphql_number_still_decodes() -> None:
    op = decode("POST", "/", [], GARBAGE["graphql huge number"])
    assert (op.model, op.action, op.reason) == ("User", "findMany", None)


def test_unknown_path_is_unknown_with_a_reason() -> None:
    op = decode("GET", "/favicon.ico", [], b"", 404, [], b"")
    assert (op.protocol, op.kind) == ("unknown", "other") and op.reason


def test_truncated_request_names_truncation_and_uses_the_response() -> None:
    op = decode("POST", "/", [], b'{"variables":{},"query":"query {\\n  findManyUser(wh', 200, [],
                b'{"data":{"findManyUser":[]}}', truncated=True)
    assert op.reason == "request body truncated"
    assert (op.model, op.action) == ("User", "findMany")


@pytest.mark.parametrize(
    ("path", "status", "body", "code"),
    [
        ("/", 200, b'{"errors":[{"error":"KnownError { ... }","user_facing_error":{"is_panic":false,"message":"Unique constr'
                   b'aint failed","meta":{"target":["email"]},"error_code":"P2002"}}],"extensions":{"logs":[{"x', "P2002"),
        ("/query", 400, b'{"code":"P2025","error":"An operation failed because it dep', "P2025"),
        (f"/6.19.0/{HASH}/graphql", 200, b'{"errors":[{"error":"x","user_facing_error":{"message":"m","error_code":"P2024"', "P2024"),
    ],
)
def test_truncated_error_response_still_yields_the_code(path: str, status: int, body: bytes, code: str) -> None:
    request = b'{"modelName":"User","action":"createOne","query":{"selection":{"$scalars":true}}}'
    op = decode("POST", path, [], request, status, [], body, truncated=True)
    assert op.error_code == code


def test_row_data_that_looks_like_an_error_is_not_one() -> None:
    request = b'{"modelName":"Log","action":"findMany","query":{"selection":{"$scalars":true}}}'
    op = decode("POST", "/", [], request, 200, [], b'{"data":{"findManyLog":[{"code":"P2002","error_code":"P2002"', truncated=True)
    assert op.error_code is None


def test_deep_error_meta_is_bounded() -> None:
    op = decode("POST", "/query", [], b"{}", 400, [], GARBAGE["deep meta"])
    assert op.error_code == "P2002"
    assert "…" in json.dumps(op.details["error_meta"], ensure_ascii=False)
    serialisable(op)
