"""Real recorded Prisma traffic replayed through the real proxy: decoded, grouped, redacted.

The 4.7.1 GraphQL-protocol engine cannot run here, so its recorded traffic (and that of the
other stacks, for the same checks) is replayed: a loopback server answers each recorded
request with its recorded response, in order, and the sidecar sits in between.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pdp_observe.protocol import decode
from pdp_observe.sidecar import start_sidecar
from pdp_observe.store import StoreReader
from tests.conftest import await_stored, make_settings, run_cli

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"
SKIP_RESP = {"content-length", "transfer-encoding", "connection", "keep-alive", "date"}


def load(stack: str) -> list[dict]:
    lines = (RECORDED / f"{stack}.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda e: e["seq"])


async def replay_server(exchanges: list[dict]) -> tuple[web.AppRunner, int]:
    answers = deque(exchanges)

    async def handler(req: web.Request) -> web.Response:
        await req.read()
        rec = answers.popleft()
        assert (req.method, req.raw_path) == (rec["method"], rec["path"]), "replay out of order"
        headers = [(k, v) for k, v in rec["resp_headers"] if k.lower() not in SKIP_RESP]
        return web.Response(status=rec["status"], body=base64.b64decode(rec["resp_body_b64"]), headers=headers)

    runner = web.AppRunner(web.Application(), access_log=None)
    runner.app.router.add_route("*", "/{tail:.*}", handler)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.mark.parametrize("stack", ["qe471", "dp619", "qpe72", "qe619"])
async def test_recorded_stack_through_the_proxy(stack, tmp_path):
    recorded = load(stack)
    runner, port = await replay_server(recorded)
    db = tmp_path / "c.db"
    sc = await start_sidecar(make_settings(f"http://127.0.0.1:{port}", db))
    try:
        async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type")) as s:
            for rec in recorded:
                headers = [(k, v) for k, v in rec["req_headers"] if k.lower() not in ("host", "connection", "content-length")]
                body = base64.b64decode(rec["req_body_b64"])
                async with s.request(rec["method"], f"http://127.0.0.1:{sc.port}{rec['path']}",
                                     headers=headers, data=body or None) as r:
                    assert r.status == rec["status"]
                    assert await r.read() == base64.b64decode(rec["resp_body_b64"])
        await await_stored(sc, len(recorded))
    finally:
        await sc.stop()
        await runner.cleanup()

    rows = [json.loads(line) for line in run_cli("ls", "--db", str(db), "--json", "--last", "0").stdout.splitlines()]
    assert len(rows) == len(recorded)
    for row, rec in zip(rows, recorded):
        want = decode(rec["method"], rec["path"], [tuple(h) for h in rec["req_headers"]],
                      base64.b64decode(rec["req_body_b64"]), rec["status"],
                      [tuple(h) for h in rec["resp_headers"]], base64.b64decode(rec["resp_body_b64"]))
        assert (row["protocol"], row["model"], row["action"], row["error_code"], row["txn"]) == (
            want.protocol, want.model, want.action, want.error_code, want.txn), rec["seq"]
        assert row["fingerprint"] == want.fingerprint

    codes = [r["error_code"] for r in rows if r["error_code"]]
    assert "P2002" in codes and "P2025" in codes
    if stack == "qe471":
        assert codes.count("P2024") == 8 and {r["protocol"] for r in rows if r["kind"] == "query"} == {"engine-graphql"}
    if stack.startswith("qpe"):
        queries = [r for r in rows if r["kind"] == "query"]
        assert queries and all(r["sql"] for r in queries)

    reader = StoreReader(str(db))
    outcomes = [t["outcome"] for t in reader.transactions()]
    assert "committed" in outcomes and "rolled_back" in outcomes
    for tx in reader.transactions():
        assert tx["exchange_ids"] and all(reader.resolve(i) for i in tx["exchange_ids"])
    filtered = run_cli("ls", "--db", str(db), "--code", "P2002", "--json").stdout.splitlines()
    assert len(filtered) == 1 and json.loads(filtered[0])["error_code"] == "P2002"

    raw = b"".join(p.read_bytes() for p in tmp_path.glob("c.db*"))
    shown = run_cli("show", "--db", str(db), rows[-1]["id"]).stdout
    for secret in (b"Bearer test", b"api_key=test"):
        assert secret not in raw and secret.decode() not in shown
