"""Every file of reference/examples, decoded in the exchange it belongs to, with its facts checked.

Each example is a request *or* a response body; the table pairs it with the rest of a
plausible exchange (method, path, the other body) and lists what :func:`decode` must find.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from pdp_observe.exchange import Operation
from pdp_observe.protocol import decode

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
HASH = "3b1e0f6c2d9a8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"
CUID = "clzx4p0fd0000qzrm2j8y4k1b"
UUID = "3f9c1d2e-7b8a-4c5d-9e0f-1a2b3c4d5e6f"


def raw(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def wire(name: str) -> tuple[bytes, int]:
    """The body without ``_``-annotations, and the status an annotation gives (default 200)."""
    data = json.loads(raw(name))
    status = data.pop("_http_status", 200)
    return json.dumps(data).encode(), status


def engine(req: bytes, resp: bytes = b"", status: int = 200, headers: list[tuple[str, str]] | None = None) -> Operation:
    return decode("POST", "/", headers or [], req, status, [], resp)


def json_query(model: str, action: str) -> bytes:
    query = {"arguments": {}, "selection": {"$scalars": True}}
    return json.dumps({"modelName": model, "action": action, "query": query}).encode()


def batch_of(model: str, action: str, count: int) -> bytes:
    return json.dumps({"batch": [json.loads(json_query(model, action)) for _ in range(count)]}).encode()


def tx(path: str, req: bytes = b"", resp_name: str | None = None, resp: bytes = b"{}") -> Operation:
    status = 200
    if resp_name:
        resp, status = wire(resp_name)
    return decode("POST", path, [], req, status, [], resp)


def qpe_query(resp_name: str | None = None, status: int = 200) -> Operation:
    resp = wire(resp_name)[0] if resp_name else b'{"data":[]}'
    return decode("POST", "/query", [("Prisma-Engine-Hash", "7.2.0")], raw("constructed/qpe-query-request.json"), status, [], resp)


def schema_upload() -> Operation:
    text = base64.b64encode(raw("jsonproto-request-qc-schema.prisma"))
    digest = hashlib.sha256(text).hexdigest()
    return decode("PUT", f"/5.22.0/{digest}/schema", [], text, 200, [], digest.encode())


def dp_start() -> Operation:
    return decode(
        "POST", f"/5.22.0/{HASH}/transaction/start", [("Authorization", "Bearer k")],
        raw("constructed/dataproxy-itx-start-request.json"), 200, [],
        raw("constructed/dataproxy-itx-start-response.json"),
    )


def has_text(text: str) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and text in value


GRAPHQL_MUTATION = json.dumps({"query": "mutation { createOneTestModel(data: { id: 1 }) { id }}", "variables": {}}).encode()
QPE_START = "constructed/qpe-transaction-start-request.json"

CASES: dict[str, tuple[Callable[[], Operation], dict[str, Any]]] = {
    "batch-response-compacted-ok.json": (
        lambda: engine(batch_of("TestModel", "findUniqueOrThrow", 2), raw("batch-response-compacted-ok.json")),
        {"kind": "batch", "model": "TestModel", "action": "findUniqueOrThrow", "error_code": None},
    ),
    "batch-response-with-user-facing-error.json": (
        lambda: engine(batch_of("TestModel", "findUniqueOrThrow", 2), raw("batch-response-with-user-facing-error.json")),
        {"kind": "batch", "error_code": "P2025", "details.failed_operations": [1],
         "operations": lambda ops: ops[1]["error_code"] == "P2025" and "error_code" not in ops[0]},
    ),
    "graphqlproto-findmany-request.json": (
        lambda: engine(raw("graphqlproto-findmany-request.json")),
        {"protocol": "engine-graphql", "kind": "query", "model": "Person", "action": "findMany", "details.shape": "Person.findMany{id}"},
    ),
    "graphqlproto-findmany-response.json": (
        lambda: engine(b"", raw("graphqlproto-findmany-response.json")),
        {"model": "TestModel", "action": "findMany", "reason": has_text("empty body")},
    ),
    "graphqlproto-itx-mutation-response.json": (
        lambda: engine(GRAPHQL_MUTATION, raw("graphqlproto-itx-mutation-response.json"), headers=[("X-transaction-id", CUID)]),
        {"protocol": "engine-graphql", "model": "TestModel", "action": "createOne", "txn": CUID, "error_code": None},
    ),
    "jsonproto-create-request.json": (
        lambda: engine(raw("jsonproto-create-request.json")),
        {"protocol": "engine-json", "kind": "query", "model": "User", "action": "createOne", "sql": []},
    ),
    "jsonproto-findmany-bigint-arg-request.json": (
        lambda: engine(raw("jsonproto-findmany-bigint-arg-request.json")),
        {"model": "User", "action": "findMany", "details.shape": has_text("netWorth:$BigInt")},
    ),
    "jsonproto-findmany-datetime-arg-request.json": (
        lambda: engine(raw("jsonproto-findmany-datetime-arg-request.json")),
        {"model": "User", "action": "findMany", "details.shape": has_text("birthday:$DateTime")},
    ),
    "jsonproto-findmany-include-with-args-request.json": (
        lambda: engine(raw("jsonproto-findmany-include-with-args-request.json")),
        {"model": "User", "action": "findMany", "details.shape": has_text("posts(where:{published:?})")},
    ),
    "jsonproto-findmany-request.json": (
        lambda: engine(raw("jsonproto-findmany-request.json")),
        {"model": "Person", "action": "findMany", "details.shape": "Person.findMany{$scalars}"},
    ),
    "jsonproto-findmany-response.json": (
        lambda: engine(b"", raw("jsonproto-findmany-response.json")),
        {"model": "Person", "action": "findMany", "reason": has_text("empty body")},
    ),
    "jsonproto-queryraw-request.json": (
        lambda: engine(raw("jsonproto-queryraw-request.json")),
        {"kind": "raw", "model": None, "action": "queryRaw",
         "sql": lambda s: [(x.sql, x.params, x.param_count) for x in s] == [("SELECT ?", [1], 1)]},
    ),
    "jsonproto-request-qc-create-many.json": (
        lambda: engine(raw("jsonproto-request-qc-create-many.json")),
        {"model": "User", "action": "createMany", "details.shape": "User.createMany(data:[{email:?}]){$scalars}"},
    ),
    "jsonproto-request-qc-create-nested-create.json": (
        lambda: engine(raw("jsonproto-request-qc-create-nested-create.json")),
        {"model": "User", "action": "createOne", "details.shape": has_text("posts:{create:[{title:?}]}")},
    ),
    "jsonproto-request-qc-data-types.json": (
        lambda: engine(raw("jsonproto-request-qc-data-types.json")),
        {"model": "DataTypes", "action": "findMany"},
    ),
    "jsonproto-request-qc-query-one2m-pagination.json": (
        lambda: engine(raw("jsonproto-request-qc-query-one2m-pagination.json")),
        {"model": "Post", "action": "findMany", "details.shape": has_text("categories(cursor:{id:?},distinct:[?],skip:?,take:?)")},
    ),
    "jsonproto-request-qc-query-raw.json": (
        lambda: engine(raw("jsonproto-request-qc-query-raw.json")),
        {"kind": "raw", "action": "queryRaw", "sql": lambda s: s[0].sql == "SELECT * FROM User WHERE id = $1" and s[0].params == [1]},
    ),
    "jsonproto-request-qc-schema.prisma": (
        schema_upload,
        {"protocol": "dataproxy", "kind": "schema_upload", "details.schema_hash_match": True,
         "details.models": lambda m: {"User", "Employee", "Post"} <= set(m)},
    ),
    "jsonproto-request-qc-upsert.json": (
        lambda: engine(raw("jsonproto-request-qc-upsert.json")),
        {"model": "User", "action": "upsertOne"},
    ),
    "metrics-json-format.json": (
        lambda: decode("POST", "/metrics?format=json", [], b"{}", 200, [], raw("metrics-json-format.json")),
        {"protocol": "engine", "kind": "metrics", "details.format": "json", "error_code": None},
    ),
    "metrics-prometheus-format.txt": (
        lambda: decode("GET", "/metrics", [], b"", 200, [], raw("metrics-prometheus-format.txt")),
        {"protocol": "engine", "kind": "metrics", "details.format": "prometheus", "error_message": None},
    ),
    "metrics-prometheus-prisma-help-type-lines.txt": (
        lambda: decode("GET", "/metrics", [], b"", 200, [], raw("metrics-prometheus-prisma-help-type-lines.txt")),
        {"kind": "metrics", "details.format": "prometheus"},
    ),
    "user-facing-error-known-p1013.json": (
        lambda: decode("POST", "/transaction/start", [], b'{"max_wait":1,"timeout":1}', 500, [], raw("user-facing-error-known-p1013.json")),
        {"protocol": "engine", "kind": "tx_start", "txn": None, "error_code": "P1013", "error_message": has_text("database string is invalid")},
    ),
    "constructed/dataproxy-itx-start-request.json": (
        dp_start, {"protocol": "dataproxy", "kind": "tx_start", "isolation_level": "ReadCommitted", "details.max_wait_ms": 2000},
    ),
    "constructed/dataproxy-itx-start-response.json": (
        dp_start, {"txn": CUID, "client_version": "5.22.0", "schema_hash": HASH, "details.itx_endpoint": has_text(f"/itx/{CUID}")},
    ),
    "constructed/graphqlproto-batch-request.json": (
        lambda: engine(raw("constructed/graphqlproto-batch-request.json")),
        {"protocol": "engine-graphql", "kind": "batch", "model": "User", "action": None, "isolation_level": "Serializable",
         "details.transactional": True, "operations": lambda ops: [o["action"] for o in ops] == ["createOne", "findMany"]},
    ),
    "constructed/jsonproto-batch-request.json": (
        lambda: engine(raw("constructed/jsonproto-batch-request.json")),
        {"protocol": "engine-json", "kind": "batch", "model": "User", "action": None, "isolation_level": "Serializable",
         "details.transactional": True, "operations": lambda ops: [o["action"] for o in ops] == ["createOne", "findMany"]},
    ),
    "constructed/legacy-engine-itx-commit-response.json": (
        lambda: tx(f"/transaction/{CUID}/commit", resp_name="constructed/legacy-engine-itx-commit-response.json"),
        {"protocol": "engine", "kind": "tx_commit", "txn": CUID, "error_code": None},
    ),
    "constructed/legacy-engine-itx-expired-commit-422.json": (
        lambda: tx(f"/transaction/{CUID}/commit", resp_name="constructed/legacy-engine-itx-expired-commit-422.json"),
        {"kind": "tx_commit", "txn": CUID, "error_code": "P2028", "error_message": has_text("expired transaction")},
    ),
    "constructed/legacy-engine-itx-not-found-404.json": (
        lambda: tx(f"/transaction/{CUID}/rollback", resp_name="constructed/legacy-engine-itx-not-found-404.json"),
        {"kind": "tx_rollback", "txn": CUID, "error_code": "P2028", "error_message": has_text("Transaction not found")},
    ),
    "constructed/legacy-engine-itx-start-request.json": (
        lambda: tx("/transaction/start", raw("constructed/legacy-engine-itx-start-request.json"), "constructed/legacy-engine-itx-start-response.json"),
        {"protocol": "engine", "kind": "tx_start", "isolation_level": "Serializable", "details.max_wait_ms": 2000, "details.timeout_ms": 5000},
    ),
    "constructed/legacy-engine-itx-start-response.json": (
        lambda: tx("/transaction/start", raw("constructed/legacy-engine-itx-start-request.json"), "constructed/legacy-engine-itx-start-response.json"),
        {"protocol": "engine", "txn": CUID},
    ),
    "constructed/legacy-engine-itx-start-timeout-504.json": (
        lambda: tx("/transaction/start", raw("constructed/legacy-engine-itx-start-request.json"), "constructed/legacy-engine-itx-start-timeout-504.json"),
        {"protocol": "engine", "kind": "tx_start", "txn": None, "error_code": "P2028"},
    ),
    "constructed/qpe-connection-info-response.json": (
        lambda: decode("GET", "/connection-info", [], b"", 200, [], raw("constructed/qpe-connection-info-response.json")),
        {"protocol": "qpe", "kind": "connection_info", "details.provider": "postgres", "details.supports_relation_joins": True},
    ),
    "constructed/qpe-error-resource-limit-422.json": (
        lambda: qpe_query("constructed/qpe-error-resource-limit-422.json", 422),
        {"protocol": "qpe", "error_code": None, "error_message": "Query timeout exceeded", "details.client_code": "P6000"},
    ),
    "constructed/qpe-error-transaction-409.json": (
        lambda: decode("POST", f"/transaction/{UUID}/query", [], raw("constructed/qpe-query-request.json"), 409, [],
                       raw("constructed/qpe-error-transaction-409.json")),
        {"protocol": "qpe", "txn": UUID, "error_code": "P2028", "model": "User"},
    ),
    "constructed/qpe-error-user-facing-400.json": (
        lambda: decode("POST", "/query", [], raw("constructed/qpe-query-request.json"), 400, [], raw("constructed/qpe-error-user-facing-400.json")),
        {"protocol": "qpe", "error_code": "P2002", "details.error_meta": lambda m: "driverAdapterError" in m},
    ),
    "constructed/qpe-query-request.json": (
        qpe_query,
        {"protocol": "qpe", "kind": "query", "model": "User", "action": "findMany", "client_version": "7.2.0",
         "details.statement_count": 1,
         "sql": lambda s: s[0].sql.endswith("WHERE 1=1 OFFSET $1") and s[0].params == [0] and s[0].param_count == 1},
    ),
    "constructed/qpe-query-response-capture-error.json": (
        lambda: qpe_query("constructed/qpe-query-response-capture-error.json"), {"error_code": None, "error_message": None, "model": "User"},
    ),
    "constructed/qpe-query-response-capture-query.json": (
        lambda: qpe_query("constructed/qpe-query-response-capture-query.json"), {"error_code": None, "error_message": None, "action": "findMany"},
    ),
    "constructed/qpe-query-response-capture-tracing.json": (
        lambda: qpe_query("constructed/qpe-query-response-capture-tracing.json"), {"error_code": None, "details.statement_count": 1},
    ),
    "constructed/qpe-transaction-end-response.json": (
        lambda: tx(f"/transaction/{UUID}/commit", resp_name="constructed/qpe-transaction-end-response.json"),
        {"protocol": "qpe", "kind": "tx_commit", "txn": UUID, "error_code": None},
    ),
    "constructed/qpe-transaction-start-request.json": (
        lambda: decode("POST", "/transaction/start", [], raw(QPE_START), None, None, None),
        {"protocol": "qpe", "kind": "tx_start", "isolation_level": "READ COMMITTED", "details.max_wait_ms": 2000, "txn": None},
    ),
    "constructed/qpe-transaction-start-response.json": (
        lambda: tx("/transaction/start", raw(QPE_START), "constructed/qpe-transaction-start-response.json"),
        {"protocol": "qpe", "kind": "tx_start", "txn": UUID},
    ),
    "constructed/query-error-p2002-response.json": (
        lambda: engine(json_query("User", "createOne"), raw("constructed/query-error-p2002-response.json")),
        {"error_code": "P2002", "details.error_meta": {"target": ["email"]}, "model": "User"},
    ),
    "constructed/query-error-p2024-pool-timeout-response.json": (
        lambda: engine(json_query("User", "findMany"), raw("constructed/query-error-p2024-pool-timeout-response.json")),
        {"error_code": "P2024", "details.error_meta": {"connection_limit": 5, "timeout": 10}},
    ),
    "constructed/telemetry-6.1plus-response.json": (
        lambda: engine(b"", raw("constructed/telemetry-6.1plus-response.json")),
        {"model": "User", "action": "findMany", "error_code": None, "reason": has_text("empty body")},
    ),
    "constructed/telemetry-legacy-4.10-6.0-response.json": (
        lambda: engine(json_query("User", "findMany"), raw("constructed/telemetry-legacy-4.10-6.0-response.json")),
        {"model": "User", "action": "findMany", "error_code": None, "reason": None},
    ),
}

# Files holding several cases; each has its own parametrised test below.
MULTI = {
    "dataproxy-error-bodies.json",
    "protocol-mismatch-422-responses.json",
    "constructed/dataproxy-request-headers-by-version.json",
}


def _actual(op: Operation, key: str) -> Any:
    if key.startswith("details."):
        return op.details.get(key.removeprefix("details."), "<missing>")
    return getattr(op, key)


def test_every_example_file_has_a_case() -> None:
    files = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*") if p.is_file()} - {"README.md"}
    assert files == set(CASES) | MULTI


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_decodes_to_its_facts(name: str) -> None:
    build, expected = CASES[name]
    op = build()
    for key, want in expected.items():
        got = _actual(op, key)
        assert want(got) if callable(want) else got == want, f"{key}: {got!r}"
    if "reason" not in expected:
        assert op.reason is None


def _client_code(client_result: str) -> str:
    match = re.search(r"P\d{4}", client_result)
    assert match, client_result
    return match.group()


DP_ERRORS = json.loads(raw("dataproxy-error-bodies.json"))


@pytest.mark.parametrize("case", sorted(DP_ERRORS))
def test_dataproxy_error_body_maps_to_the_clients_code(case: str) -> None:
    example = DP_ERRORS[case]
    body = example["body"]
    resp = b"" if body == "" else json.dumps(body).encode()
    op = decode("POST", f"/5.22.0/{HASH}/graphql", [], json_query("User", "findMany"), example["status"], [], resp)
    assert op.protocol == "dataproxy"
    assert op.error_code == _client_code(example["client_result"])
    if isinstance(body, dict):
        assert op.details["dp_error"].startswith("EngineNotStarted.")


MISMATCH = json.loads(raw("protocol-mismatch-422-responses.json"))


@pytest.mark.parametrize("case", sorted(MISMATCH))
def test_protocol_mismatch_422_is_flagged(case: str) -> None:
    example = MISMATCH[case]
    req = raw("graphqlproto-findmany-request.json") if case.startswith("graphql") else raw("jsonproto-findmany-request.json")
    op = engine(req, json.dumps(example["body"]).encode(), example["status"])
    assert op.details["protocol_mismatch"] is True
    assert op.error_code is None and op.error_message.startswith("Error parsing")
    assert op.model == "Person"


HEADER_SETS = json.loads(raw("constructed/dataproxy-request-headers-by-version.json"))


@pytest.mark.parametrize("version", sorted(HEADER_SETS))
def test_dataproxy_headers_of_every_client_version_stay_out_of_the_operation(version: str) -> None:
    headers = [(name, value.replace("<api_key>", "s3cret")) for name, value in HEADER_SETS[version].items()]
    op = decode("POST", f"/5.22.0/{HASH}/graphql?api_key=s3cret", headers, json_query("User", "findMany"), 200, [], b'{"data":{}}')
    assert (op.protocol, op.model, op.action, op.client_version) == ("dataproxy", "User", "findMany", "5.22.0")
    assert "s3cret" not in json.dumps(dataclasses.asdict(op))
