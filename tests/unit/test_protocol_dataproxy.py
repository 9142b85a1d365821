"""Data Proxy specifics: schema upload, itx routes, the proxy's own errors (pdp_observe.protocol.dataproxy)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from pdp_observe.protocol import decode

SCHEMA = b'datasource db {\n  provider = "postgresql"\n}\n\nmodel User {\n  id Int @id\n}\n\n  model   Post{\n  id Int @id\n}\n// model Nope {\n'
TEXT = base64.b64encode(SCHEMA)
DIGEST = hashlib.sha256(TEXT).hexdigest()
BASE = f"/6.19.0/{DIGEST}"
QUERY = b'{"modelName":"User","action":"findMany","query":{"selection":{"$scalars":true}}}'


def test_schema_upload_verifies_the_hash_and_lists_models() -> None:
    op = decode("PUT", f"{BASE}/schema", [("Authorization", "Bearer k")], TEXT, 200, [], DIGEST.encode())
    assert op.kind == "schema_upload" and op.reason is None
    assert op.details == {"schema_size": len(TEXT), "schema_sha256": DIGEST, "schema_hash_match": True, "models": ["User", "Post"]}


def test_schema_upload_with_another_hash_is_flagged() -> None:
    op = decode("PUT", f"/6.19.0/{'0' * 64}/schema", [], TEXT, 200, [], b"")
    assert op.details["schema_hash_match"] is False


def test_truncated_schema_upload_is_not_verified() -> None:
    op = decode("PUT", f"{BASE}/schema", [], TEXT[:80], None, truncated=True)
    assert "schema_sha256" not in op.details and "schema_hash_match" not in op.details
    assert op.reason and "truncated" in op.reason
    assert op.details["models"] == ["User"]  # what came before the cut


def test_schema_upload_that_is_not_base64() -> None:
    op = decode("PUT", f"{BASE}/schema", [], SCHEMA, 200, [], b"")
    assert op.reason == "schema upload is not base64 text"


def test_itx_routes_take_the_id_from_the_path() -> None:
    query = decode("POST", f"{BASE}/itx/abc123/graphql", [], QUERY, 200, [], b'{"data":{"findManyUser":[]}}')
    commit = decode("POST", f"{BASE}/itx/abc123/commit", [], b"", 200, [], b"{}")
    assert (query.kind, query.txn, query.details["engine_protocol"]) == ("query", "abc123", "engine-json")
    assert (commit.kind, commit.txn, commit.error_code) == ("tx_commit", "abc123", None)


def test_tx_start_endpoint_loses_its_query_string() -> None:
    resp = json.dumps({"id": "abc123", "data-proxy": {"endpoint": f"https://h{BASE}/itx/abc123?api_key=s3cret"}}).encode()
    op = decode("POST", f"{BASE}/transaction/start", [], b'{"max_wait":2000,"timeout":5000,"isolation_level":"Serializable"}', 200, [], resp)
    assert (op.txn, op.isolation_level) == ("abc123", "Serializable")
    assert op.details["itx_endpoint"] == f"https://h{BASE}/itx/abc123"


def test_engine_error_passed_through_keeps_its_code() -> None:
    body = b'{"is_panic":false,"message":"Transaction API error: Transaction not found.","meta":{},"error_code":"P2028"}'
    op = decode("POST", f"{BASE}/itx/abc123/rollback", [], b"", 404, [], body)
    assert op.error_code == "P2028"  # a known engine error, not the 404 fallback P5003


def test_graphql_protocol_bodies_through_the_proxy() -> None:
    op = decode("POST", f"{BASE}/graphql", [], b'{"query":"query { findManyUser { id } }","variables":{}}', 200, [], b"{}")
    assert (op.protocol, op.model, op.action, op.details["engine_protocol"]) == ("dataproxy", "User", "findMany", "engine-graphql")


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (400, {"InteractiveTransactionMisrouted": {"reason": "IDParseError"}}, "P5015", "Could not parse interactive transaction ID"),
        (400, {"InvalidRequestError": {"reason": "itx timeout too high"}}, "P5011", "itx timeout too high"),
        (500, "InternalDataProxyError", "P5006", "Internal Data Proxy error"),
        (500, {"EngineNotStarted": {"reason": {"EngineStartupError": {"msg": "boom", "logs": []}}}}, "P5014", "boom"),
        (400, {"EngineNotStarted": {"reason": "InvalidRequest"}}, "P5000", '{"EngineNotStarted": {"reason": "InvalidRequest"}}'),
        (401, None, "P5007", "HTTP 401"),
        (403, "Wrong API Key", "P5007", '"Wrong API Key"'),
        (429, None, "P5008", "HTTP 429"),
        (504, None, "P5009", "HTTP 504"),
        (502, None, "P5006", "HTTP 502"),
        (422, {"is_panic": False, "message": "Error parsing Json query.", "backtrace": None}, "P5000", "Error parsing Json query."),
    ],
)
def test_proxy_error_bodies_map_to_client_codes(status: int, body: object, code: str, message: str) -> None:
    raw = b"" if body is None else json.dumps(body).encode()
    op = decode("POST", f"{BASE}/graphql", [], QUERY, status, [], raw)
    assert (op.error_code, op.error_message) == (code, message)
