"""Prisma 7 query-plan executor specifics (pdp_observe.protocol.qpe)."""

from __future__ import annotations

import json

import pytest

from pdp_observe.protocol import decode

UUID = "6720aa3f-ef49-4b79-b585-22af27d294ab"
RAW = json.dumps({
    "operation": "executeRaw",
    "plan": {"type": "execute", "args": {"type": "rawSql", "sql": "UPDATE t SET a = $1", "args": [1]}},
    "params": {},
    "comments": {"route": "/x"},
}).encode()


def test_raw_operation() -> None:
    op = decode("POST", "/query", [], RAW, 200, [], b'{"data":1}')
    assert (op.protocol, op.kind, op.model, op.action) == ("qpe", "raw", None, "executeRaw")
    assert [(s.sql, s.params) for s in op.sql] == [("UPDATE t SET a = $1", [1])]
    assert op.details["shape"] == "executeRaw: UPDATE t SET a = ?"


def test_query_in_a_transaction_takes_the_id_from_the_path() -> None:
    op = decode("POST", f"/transaction/{UUID}/query", [], RAW, 200, [], b'{"data":1}')
    assert op.txn == UUID


def test_start_id_from_the_header_when_the_body_lacks_it() -> None:
    op = decode("POST", "/transaction/start", [], b'{"timeout":5000}', 200, [("prisma-transaction-id", UUID)], b"{}")
    assert (op.protocol, op.kind, op.txn, op.details["timeout_ms"]) == ("qpe", "tx_start", UUID, 5000)


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "message", "client_code"),
    [
        (422, b'{"error":"Query timeout exceeded"}', [], None, "Query timeout exceeded", "P6000"),
        (422, b'{"error":"Query timeout exceeded"}', [("Prisma-Error-Code", "P6004")], None, "Query timeout exceeded", "P6004"),
        (400, b"Malformed X-Capture-Telemetry header", [], None, "Malformed X-Capture-Telemetry header", "P6000"),
        (500, b'{"error":"boom"}', [], None, "boom", "P6000"),
        (409, b'{"code":"P2028","error":"Transaction API error: Transaction already closed","meta":{}}', [], "P2028",
         "Transaction API error: Transaction already closed", None),
        (400, b"", [], None, "HTTP 400", "P6000"),
    ],
)
def test_errors(status: int, body: bytes, headers: list[tuple[str, str]], code: str | None, message: str, client_code: str | None) -> None:
    op = decode("POST", "/query", [], RAW, status, headers, body)
    assert (op.error_code, op.error_message, op.details.get("client_code")) == (code, message, client_code)


def test_success_never_carries_an_error() -> None:
    op = decode("POST", "/query", [], RAW, 200, [], b'{"data":1,"extensions":{"logs":[{"level":"error","message":"x"}]}}')
    assert op.error_code is None and op.error_message is None


def test_health() -> None:
    op = decode("GET", "/health", [], b"", 200, [], b'{"status":"ok"}')
    assert (op.protocol, op.kind, op.reason) == ("qpe", "health", None)
