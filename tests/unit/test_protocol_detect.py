"""Which generation an exchange belongs to (pdp_observe.protocol.decode, detection rules)."""

from __future__ import annotations

import pytest

from pdp_observe.protocol import decode

UUID = "ac98fd9b-e789-4842-8a9d-bf1d934e3c71"
CUID = "cmwq4dhoh00007dl3gek4gg64"
CUID2 = "exyx31hoz6fhor50fxj7kpg4"
HASH = "48021bfbec26560b6b25e6e125df891aa55bea4608599fffd5d3985f71682a0c"
ENGINE_HASH = "2ba551f319ab1df4bc874a89965d8b3641056773"


@pytest.mark.parametrize(
    ("body", "headers", "resp_headers", "resp", "protocol"),
    [
        (b'{"max_wait":2000,"timeout":5000}', [], [], b"", "engine"),
        (b'{"maxWait":2000,"timeout":5000}', [], [], b"", "qpe"),
        (b'{"timeout":5000,"isolationLevel":"SERIALIZABLE"}', [], [], b"", "qpe"),
        (b"", [], [], f'{{"id":"{UUID}"}}'.encode(), "qpe"),
        (b"", [], [], f'{{"id":"{CUID2}"}}'.encode(), "engine"),
        (b"", [], [("Prisma-Transaction-Id", UUID)], b"", "qpe"),
        (b"{}", [("Authorization", "Bearer k")], [], b"", "qpe"),
        (b"{}", [("Prisma-Engine-Hash", "7.2.0")], [], b"", "qpe"),
        (b"{}", [("Prisma-Engine-Hash", ENGINE_HASH)], [], b"", "engine"),
        (b"{}", [("traceparent", "00-10-10-00")], [], b"", "engine"),
    ],
)
def test_transaction_start_is_told_apart(body: bytes, headers: list[tuple[str, str]], resp_headers: list[tuple[str, str]],
                                         resp: bytes, protocol: str) -> None:
    op = decode("POST", "/transaction/start", headers, body, 200 if resp else None, resp_headers, resp)
    assert (op.protocol, op.kind) == (protocol, "tx_start")


@pytest.mark.parametrize(("tx_id", "protocol"), [(UUID, "qpe"), (CUID, "engine"), (CUID2, "engine")])
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_transaction_end_is_told_apart_by_its_id(tx_id: str, protocol: str, end: str) -> None:
    op = decode("POST", f"/transaction/{tx_id}/{end}", [], b"", 200, [], b"{}")
    assert (op.protocol, op.kind, op.txn) == (protocol, f"tx_{end}", tx_id)


@pytest.mark.parametrize(
    ("method", "path", "protocol", "kind"),
    [
        ("POST", "/", "engine", "query"),
        ("GET", "/", "engine", "other"),
        ("GET", "/status", "engine", "health"),
        ("GET", "/sdl", "engine", "other"),
        ("GET", "/boot_trace", "engine", "other"),
        ("POST", "/metrics?format=json", "engine", "metrics"),
        ("GET", "/health", "qpe", "health"),
        ("GET", "/connection-info", "qpe", "connection_info"),
        ("POST", "/query", "qpe", "query"),
        ("POST", f"/transaction/{CUID}/query", "qpe", "query"),  # only the executor has this route
        ("POST", f"/6.19.0/{HASH}/graphql", "dataproxy", "query"),
        ("POST", f"/0.0.0/{HASH}/itx/{CUID}/graphql", "dataproxy", "query"),
        ("PUT", f"/6.19.0/{HASH}/schema", "dataproxy", "schema_upload"),
        ("POST", "/6.19.0/not-a-hash/graphql", "unknown", "other"),
        ("GET", "/favicon.ico", "unknown", "other"),
    ],
)
def test_paths(method: str, path: str, protocol: str, kind: str) -> None:
    op = decode(method, path, [], b"", None)
    assert (op.protocol, op.kind) == (protocol, kind)


def test_engine_protocol_comes_from_the_body() -> None:
    json_op = decode("POST", "/", [], b'{"modelName":"User","action":"findMany","query":{"selection":{"id":true}}}')
    graphql_op = decode("POST", "/", [], b'{"query":"{ findManyUser { id } }","variables":{}}')
    assert (json_op.protocol, graphql_op.protocol) == ("engine-json", "engine-graphql")


def test_client_version_is_read_only_where_the_wire_carries_it() -> None:
    qpe = decode("POST", "/query", [("prisma-engine-hash", "7.2.0")], b"{}")
    qpe_hash = decode("POST", "/query", [("Prisma-Engine-Hash", ENGINE_HASH)], b"{}")
    proxy = decode("POST", f"/6.19.0/{HASH}/graphql", [("Prisma-Engine-Hash", ENGINE_HASH)], b"{}")
    assert (qpe.client_version, qpe_hash.client_version, proxy.client_version) == ("7.2.0", None, "6.19.0")
