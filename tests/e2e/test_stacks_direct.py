"""Real Prisma clients against real Prisma servers, no sidecar: the baseline the proxy tests compare to.

For each recorded stack (qpe72, qe619, dp619) the workload runs directly against a fresh
database and must match the recorded client-side step log (tests/stacks/expected/): same steps,
outcomes, error codes (ROLLBACK, P2002, P2025) and result summaries. A second run after
``reset_database`` must give identical results, which is what direct-vs-proxied comparisons rely on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.stacks import expected_steps, harness

pytestmark = pytest.mark.e2e



def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _assert_matches_recording(stack: str, steps: list[dict[str, Any]]) -> None:
    expected = expected_steps(stack)
    # the recordings stop at A15; the workload then adds a 20-request burst
    extra = steps[len(expected):]
    assert [(s["step"], s.get("outcomes")) for s in extra] == [("P20 20 parallel requests", {"ok": 20})]
    steps = steps[: len(expected)]
    assert [s["step"] for s in steps] == [e["step"] for e in expected]
    for got, exp in zip(steps, expected):
        where = f"{stack} step {exp['n']} {exp['step']!r}: {json.dumps(got)[:600]}"
        assert got["n"] == exp["n"], where
        assert got["outcome"] == exp["outcome"], where
        assert got.get("code") == exp.get("code"), where
        if "outcomes" in exp:
            assert got.get("outcomes") == exp["outcomes"], where
        elif exp["outcome"] == "ok":
            assert got["summary"] == exp["result"], where


@pytest.mark.parametrize("stack", list(harness.STACKS))
def test_workload_matches_recording(stack: str, postgres: harness.Postgres, tmp_path: Path) -> None:
    server_kind, client_kind = harness.STACKS[stack]
    db_url = postgres.create_database(f"direct_{stack}")
    with harness.start_server(server_kind, db_url, log_dir=tmp_path) as server:
        first = harness.run_workload(client_kind, server.client_url)
        _assert_matches_recording(stack, first)

        harness.reset_database(db_url)
        second = harness.run_workload(client_kind, server.client_url)
        assert harness.comparable(second) == harness.comparable(first)
    assert not server.alive()


def test_engine_server_routes(postgres: harness.Postgres, tmp_path: Path) -> None:
    db_url = postgres.create_database("engine_routes")
    with harness.start_server("engine", db_url, pool_max=2, log_dir=tmp_path) as server:
        base = server.base_url
        assert _http("GET", base + "/status") == (200, '{"status":"ok"}')
        assert _http("GET", base + "/boot_trace") == (200, '{"spans":[]}')
        status, body = _http("GET", base + "/server_info")
        assert status == 200 and json.loads(body)["commit"] == "2ba551f319ab1df4bc874a89965d8b3641056773"
        status, body = _http("GET", base + "/_harness/pool")
        assert status == 200 and json.loads(body)["max"] == 2
        status, body = _http("POST", base + "/transaction/start", b'{"max_wait":2000,"timeout":5000}')
        tx = json.loads(body)["id"]
        assert status == 200 and len(tx) == 24
        assert _http("POST", f"{base}/transaction/{tx}/commit") == (200, "{}")
        status, body = _http("POST", f"{base}/transaction/{tx}/commit")
        assert status in (404, 422) and json.loads(body)["error_code"] == "P2028"
        assert _http("GET", base + "/nope")[0] == 404


def test_engine_pool_exhaustion_gives_p2024(postgres: harness.Postgres, tmp_path: Path) -> None:
    """POOL_MAX / POOL_TIMEOUT_MS bound the engine's pg.Pool; a wait timeout answers like the Rust engine."""
    db_url = postgres.create_database("engine_pool")
    count = json.dumps({"modelName": "User", "action": "aggregate",
                        "query": {"arguments": {}, "selection": {"_count": {"arguments": {},
                                                                              "selection": {"_all": True}}}}})
    with harness.start_server("engine", db_url, pool_max=1, env={"POOL_TIMEOUT_MS": "300"},
                              log_dir=tmp_path) as server:
        base = server.base_url
        status, body = _http("POST", base + "/transaction/start", b'{"max_wait":2000,"timeout":5000}')
        tx = json.loads(body)["id"]  # holds the only connection
        status, body = _http("POST", base + "/", count.encode())
        ufe = json.loads(body)["errors"][0]["user_facing_error"]
        assert status == 200 and ufe["error_code"] == "P2024"
        assert ufe["meta"] == {"connection_limit": 1, "timeout": 0.3}
        assert _http("POST", f"{base}/transaction/{tx}/rollback") == (200, "{}")
        assert _http("POST", base + "/", count.encode()) == (200, '{"data":{"aggregateUser":{"_count":{"_all":0}}}}')


def test_dataproxy_server_routes(postgres: harness.Postgres, tmp_path: Path) -> None:
    db_url = postgres.create_database("dataproxy_routes")
    schema_b64 = base64.b64encode((harness.SOURCE_DIR / "prisma6" / "dataproxy" / "schema.prisma").read_bytes())
    schema_hash = hashlib.sha256(schema_b64).hexdigest()
    with harness.start_server("dataproxy", db_url, log_dir=tmp_path) as server:
        base = f"{server.base_url}/6.19.0/{schema_hash}"
        auth = {"Authorization": "Bearer test"}
        query = json.dumps({"modelName": "User", "action": "aggregate",
                            "query": {"arguments": {}, "selection": {"_count": {"arguments": {},
                                                                                  "selection": {"_all": True}}}}})
        assert _http("POST", base + "/graphql", query.encode(), {"Authorization": "Bearer wrong"})[0] == 401
        assert _http("POST", base + "/graphql", query.encode(), auth) == (
            404, '{"EngineNotStarted":{"reason":"SchemaMissing"}}')
        assert _http("PUT", base + "/schema", b"bm90IGl0", auth)[0] == 400
        assert _http("PUT", base + "/schema", schema_b64, auth) == (200, schema_hash)
        assert _http("POST", base + "/graphql", query.encode(), auth) == (
            200, '{"data":{"aggregateUser":{"_count":{"_all":0}}}}')
        status, body = _http("POST", base + "/transaction/start", b'{"max_wait":2000,"timeout":5000}', auth)
        started = json.loads(body)
        assert status == 200
        assert started["data-proxy"]["endpoint"] == f"{server.base_url}/6.19.0/{schema_hash}/itx/{started['id']}"
        assert _http("POST", started["data-proxy"]["endpoint"] + "/rollback", b"", auth) == (200, "{}")


def test_demo_server_and_workload(tmp_path: Path) -> None:
    with harness.start_server("demo", log_dir=tmp_path) as server:
        assert server.info["url"].startswith(f"prisma+postgres://localhost:{server.port}/?api_key=")
        steps = harness.run_workload("demo", server.client_url)
    assert [(s["step"], s["outcome"], s["code"]) for s in steps] == [
        ("D1 create user with nested posts", "ok", None),
        ("D2 findMany include", "ok", None),
        ("D3 interactive transaction (commit)", "ok", None),
        ("D3b interactive transaction (rolled back)", "error", "ROLLBACK"),
        ("D4 create duplicate email (P2002)", "error", "P2002"),
        ("D5 count users", "ok", None),
        ("D6 aggregate posts", "ok", None),
    ]
    assert steps[0]["result"]["posts"] == [
        {"id": 1, "title": "Ada post 1", "authorId": 1},
        {"id": 2, "title": "Ada post 2", "authorId": 1},
    ]
    assert steps[-1]["result"] == {"_count": {"_all": 3}, "_max": {"id": 3}}
