"""Real Prisma clients → the real sidecar → real Prisma servers → PostgreSQL, one per generation.

For each stack the same workload runs directly and then through the sidecar. The client's
results must be identical; every HTTP request that reached the server (the server's own
request log is the independent count) must be recorded exactly once; decoding, transactions,
error codes and SQL must be right; and the API key must not appear anywhere we write.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pdp_observe.protocol import decode
from pdp_observe.sidecar import start_sidecar
from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings, run_cli
from tests.stacks import harness

pytestmark = pytest.mark.e2e
RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"
SECRETS = ("Bearer test", "api_key=test")



def recorded_operations(stack: str) -> tuple[list[tuple[Any, ...]], int]:
    """(kind, model, action, error_code) per recorded exchange in arrival order, and how many
    of them came before the first parallel step (A14), where arrival order is fixed."""
    ex = sorted((json.loads(line) for line in (RECORDED / f"{stack}.jsonl").read_text().splitlines()),
                key=lambda e: e["seq"])
    steps = [json.loads(line) for line in (RECORDED / f"{stack}.steps.jsonl").read_text().splitlines()]
    a14 = next(s["t_start"] for s in steps if s["step"].startswith("A14"))
    ops = []
    for e in ex:
        op = decode(e["method"], e["path"], [tuple(h) for h in e["req_headers"]], base64.b64decode(e["req_body_b64"]),
                    e["status"], [tuple(h) for h in e["resp_headers"]], base64.b64decode(e["resp_body_b64"]))
        ops.append((op.kind, op.model, op.action, op.error_code))
    return ops, sum(1 for e in ex if e["t_request"] < a14)


@pytest.mark.parametrize("stack", ["qpe72", "qe619", "dp619"])
async def test_workload_through_the_sidecar(stack: str, postgres: harness.Postgres, tmp_path: Path) -> None:
    server_kind, client_kind = harness.STACKS[stack]
    db_url = postgres.create_database(f"proxied_{stack}")
    request_log = tmp_path / "server-requests.jsonl"
    db = tmp_path / "captures.db"
    with harness.start_server(server_kind, db_url) as server:
        direct = await asyncio.to_thread(harness.run_workload, client_kind, server.client_url)
    harness.reset_database(db_url)
    # a fresh server for the proxied run, so it starts in the same state (no schema uploaded yet)
    server = harness.start_server(server_kind, db_url, env={"REQUEST_LOG": str(request_log)})
    try:
        sc = await start_sidecar(make_settings(server.base_url, db, recorder="process"))  # the default mode
        try:
            proxied = await asyncio.to_thread(harness.run_workload, client_kind,
                                              harness.client_url(client_kind, sc.port))
            reached = [json.loads(line) for line in request_log.read_text().splitlines()]
            health = await await_stored(sc, len(reached))
            assert health["dropped"] == {}
        finally:
            await sc.stop()
    finally:
        server.stop()

    # 1. the client cannot tell the sidecar is there
    assert harness.comparable(proxied) == harness.comparable(direct)

    # 2. every request that reached the server was recorded exactly once (and nothing else)
    rows = [json.loads(line) for line in run_cli("ls", "--db", str(db), "--json", "--last", "0").stdout.splitlines()]
    assert Counter((r["method"], r["path"]) for r in rows) == Counter((q["method"], q["path"]) for q in reached)
    assert len({r["id"] for r in rows}) == len(rows)

    # 3. decoded operations are the workload's, in order (up to the parallel steps), with the right codes
    want, ordered = recorded_operations(stack)
    got = [(r["kind"], r["model"], r["action"], r["error_code"]) for r in rows]
    got, burst = got[:-20], got[-20:]  # the workload ends with 20 parallel reads the recording lacks
    assert Counter(burst) == Counter({("query", "User", "aggregate", None): 10, ("query", "Post", "findMany", None): 10})
    assert got[:ordered] == want[:ordered]
    assert Counter(got) == Counter(want)
    codes = Counter(r["error_code"] for r in rows if r["error_code"])
    assert codes["P2002"] == 1 and codes["P2025"] == 1
    if stack == "dp619":
        assert codes["P5005"] == 1  # the lazy schema upload's first answer
        assert any(r["kind"] == "schema_upload" for r in rows)
        assert {r["protocol"] for r in rows} == {"dataproxy"}
    if stack == "qpe72":
        queries = [r for r in rows if r["kind"] == "query"]
        assert queries and all(r["sql"] for r in queries)
        assert any("INSERT INTO" in s for r in queries for s in r["sql"])

    # 4. interactive transactions grouped, with their outcome
    reader = StoreReader(str(db))
    outcomes = Counter(t["outcome"] for t in reader.transactions())
    assert outcomes == ({"committed": 2, "rolled_back": 1} if stack == "qpe72" else {"committed": 1, "rolled_back": 1})
    for tx in reader.transactions():
        members = run_cli("ls", "--db", str(db), "--txn", tx["txn"], "--json", "--last", "0").stdout.splitlines()
        assert len(members) == len(tx["exchange_ids"]) >= 2  # start + ... + commit/rollback
    reader.close()

    # 5. the api key never reaches the file or the CLI
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("captures.db*"))
    outputs = run_cli("ls", "--db", str(db), "--last", "0").stdout
    outputs += "".join(run_cli("show", "--db", str(db), r["id"]).stdout for r in rows[:: max(1, len(rows) // 8)])
    for secret in SECRETS:
        assert secret.encode() not in raw and secret not in outputs
    if stack != "qe619":  # the binary-engine client sends no key at all
        assert "Bearer [REDACTED:" in outputs
