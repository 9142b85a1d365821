"""Legacy query-engine specifics (pdp_observe.protocol.engine and engine_body)."""

from __future__ import annotations

import json

from pdp_observe.protocol import decode

CUID = "cmwq4dhoh00007dl3gek4gg64"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_batch_with_per_item_errors() -> None:
    batch = body(batch=[{"modelName": "User", "action": "findUniqueOrThrow", "query": {"selection": {"id": True}}}] * 3)
    resp = body(batchResult=[
        {"data": {"findUniqueUserOrThrow": {"id": 1}}},
        {"errors": [{"error": "x", "user_facing_error": {"is_panic": False, "message": "m", "error_code": "P2025"}}]},
        {"errors": [{"error": "x", "user_facing_error": {"is_panic": False, "message": "m2", "error_code": "P2025"}}]},
    ])
    op = decode("POST", "/", [], batch, 200, [], resp)
    assert (op.kind, op.model, op.action, op.error_code) == ("batch", "User", "findUniqueOrThrow", "P2025")
    assert op.details["failed_operations"] == [1, 2]
    assert [o.get("error_code") for o in op.operations] == [None, "P2025", "P2025"]


def test_whole_batch_failure_has_top_level_errors() -> None:
    batch = body(batch=[{"modelName": "User", "action": "createOne", "query": {"selection": {"id": True}}}] * 2, transaction={})
    resp = body(errors=[{"error": "x", "user_facing_error": {"is_panic": False, "message": "dup", "error_code": "P2002",
                                                             "batch_request_idx": 1}}])
    op = decode("POST", "/", [], batch, 200, [], resp)
    assert (op.error_code, op.details["transactional"]) == ("P2002", True)


def test_several_errors_keep_every_code() -> None:
    resp = body(errors=[
        {"error": "a", "user_facing_error": {"is_panic": False, "message": "a", "error_code": "P2002"}},
        {"error": "b", "user_facing_error": {"is_panic": True, "message": "b"}},
    ])
    op = decode("POST", "/", [], body(modelName="User", action="createOne", query={}), 200, [], resp)
    assert op.error_code == "P2002" and op.details["error_codes"] == ["P2002", None]


def test_unstable_error_string_is_never_used() -> None:
    resp = body(errors=[{"error": "KnownError { error_code: \"P9999\" }"}])
    op = decode("POST", "/", [], body(modelName="User", action="findMany", query={}), 200, [], resp)
    assert op.error_code is None


def test_transaction_endpoint_text_errors() -> None:
    wrong = decode("POST", "/transaction/x/y/z", [], b"", 400, [], b"wrong transaction handler path: /transaction/x/y/z")
    options = decode("POST", "/transaction/start", [], b"{", 400, [], b"Invalid transaction options")
    assert wrong.reason == "unrecognised transaction path"
    assert (options.kind, options.error_message, options.txn) == ("tx_start", "Invalid transaction options", None)


def test_query_timeout_408() -> None:
    resp = body(is_panic=False, message="Query timed out", backtrace=None)
    op = decode("POST", "/", [("X-query-timeout", "10")], body(modelName="User", action="findMany", query={}), 408, [], resp)
    assert (op.error_code, op.error_message) == (None, "Query timed out")
    assert "protocol_mismatch" not in op.details


def test_transaction_id_header_any_case() -> None:
    op = decode("POST", "/", [("x-TRANSACTION-id", CUID)], body(modelName="User", action="findMany", query={}))
    assert op.txn == CUID


def test_graphql_raw_query_parameters() -> None:
    doc = 'mutation { executeRaw(query: "UPDATE \\"User\\" SET a = $1 WHERE id = $2", parameters: "[\\"x\\",3]") }'
    op = decode("POST", "/", [], body(query=doc, variables={}))
    assert (op.kind, op.action) == ("raw", "executeRaw")
    assert [(s.sql, s.params, s.param_count) for s in op.sql] == [('UPDATE "User" SET a = $1 WHERE id = $2', ["x", 3], 2)]


def test_raw_query_with_broken_parameters_string() -> None:
    op = decode("POST", "/", [], body(action="queryRaw", query={"arguments": {"query": "SELECT 1", "parameters": "[1,"}}))
    assert [(s.sql, s.params) for s in op.sql] == [("SELECT 1", [])]


def test_unknown_graphql_field_is_reported() -> None:
    op = decode("POST", "/", [], body(query="{ hello }", variables={}))
    assert op.protocol == "engine-graphql" and op.reason and "hello" in op.reason
