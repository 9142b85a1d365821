"""The management API on a real sidecar: real HTTP on loopback, real upstreams, real store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pdp_observe.config import Settings
from pdp_observe.sidecar import start_sidecar
from tests.conftest import await_stored, make_settings, run_cli


class FakeEngine:
    """A query engine speaking the JSON protocol on ``POST /``: deterministic reads, counted writes."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.next_id = 100

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.json()
        self.received.append(body)
        self.headers.append(dict(req.headers))
        model, action = body.get("modelName"), body.get("action")
        if req.headers.get("X-Require-Auth") and not req.headers.get("Authorization"):
            return web.json_response({"error": "unauthorized"}, status=401)
        if action == "findMany":
            take = body["query"]["arguments"].get("take", 3)
            data: Any = [{"id": i, "email": f"u{i}@example.test"} for i in range(take)]
        elif action == "createOne":
            self.next_id += 1
            data = {"id": self.next_id}
        else:
            data = None
        return web.json_response({"data": {f"{action}{model}": data}})


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, FakeEngine]]:
    state = FakeEngine()
    app = web.Application()
    app.router.add_post("/", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", state
    await runner.cleanup()


def find_many(take: int) -> dict[str, Any]:
    return {"modelName": "User", "action": "findMany",
            "query": {"arguments": {"take": take}, "selection": {"$scalars": True}}}


CREATE = {"modelName": "User", "action": "createOne",
          "query": {"arguments": {"data": {"email": "new@example.test"}}, "selection": {"id": True}}}


async def send(s: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    async with s.post(url + "/", json=body, headers=headers) as r:
        assert r.status == 200
        return await r.json()


@pytest.fixture
async def sidecar_on_engine(engine, tmp_path):
    sc = await start_sidecar(make_settings(engine[0], tmp_path / "c.db"))
    yield sc, engine[1]
    await sc.stop()


async def get(s: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with s.get(url, **kw) as r:
        return r.status, await r.json()


async def test_pages_filters_detail_and_errors(sidecar_on_engine):
    sc, _ = sidecar_on_engine
    proxy, api = f"http://127.0.0.1:{sc.port}", f"http://127.0.0.1:{sc.admin_port}/api/v1"
    async with aiohttp.ClientSession() as s:
        for take in range(1, 6):
            await send(s, proxy, find_many(take))
        await send(s, proxy, CREATE)
        await await_stored(sc, 6)

        status, info = await get(s, f"{api}/info")
        assert status == 200 and info["admin"] is True and info["upstream"] == sc.settings.upstream
        assert info["db"] == sc.settings.db and "token" not in json.dumps(info).lower()

        status, page = await get(s, f"{api}/exchanges", params={"limit": "4"})
        assert status == 200 and page["total"] == 6 and page["offset"] == 0
        assert [r["action"] for r in page["rows"]] == ["createOne", "findMany", "findMany", "findMany"]
        assert [r["seq"] for r in page["rows"]] == [6, 5, 4, 3]
        _, rest = await get(s, f"{api}/exchanges", params={"limit": "4", "offset": "4"})
        assert [r["seq"] for r in rest["rows"]] == [2, 1]
        _, asc = await get(s, f"{api}/exchanges", params={"order": "asc", "limit": "2"})
        assert [r["seq"] for r in asc["rows"]] == [1, 2]

        _, reads = await get(s, f"{api}/exchanges", params={"filter": "action:findMany"})
        assert reads["total"] == 5 and {r["model"] for r in reads["rows"]} == {"User"}
        _, biggest = await get(s, f"{api}/exchanges", params={"sort": "size", "limit": "1",
                                                              "filter": "action:findMany"})
        assert biggest["total"] == 5 and biggest["rows"][0]["seq"] == 5  # take=5: the largest answer

        ex_id = page["rows"][0]["id"]
        status, detail = await get(s, f"{api}/exchanges/{ex_id[-8:]}")  # as tables show it
        assert status == 200 and detail["id"] == ex_id and detail["operation"]["action"] == "createOne"
        assert json.loads(detail["request"]["body"]["text"]) == CREATE
        assert detail["transaction"] is None and detail["seq"] == 6

        status, err = await get(s, f"{api}/exchanges/ffffffffffff")
        assert status == 404 and "no exchange" in err["error"]
        status, err = await get(s, f"{api}/exchanges", params={"filter": "model:User ms:>>5"})
        assert status == 400 and isinstance(err["position"], int) and err["position"] >= 11
        assert err["error"].startswith("filter error at")
        status, err = await get(s, f"{api}/exchanges", params={"limit": "5000"})
        assert status == 400 and "limit" in err["error"]
        status, err = await get(s, f"{api}/exchanges", params={"sort": "colour"})
        assert status == 400 and "sort" in err["error"]
        status, err = await get(s, f"{api}/transactions/nope")
        assert status == 404 and "no transaction" in err["error"]
        status, err = await get(s, f"{api}/nothing-here")
        assert status == 404 and "no such endpoint" in err["error"]

        status, ops = await get(s, f"{api}/operations", params={"window": "600"})
        assert status == 200 and sorted((o["action"], o["count"]) for o in ops) == [("createOne", 1), ("findMany", 5)]
        assert [o["total_ms"] for o in ops] == sorted((o["total_ms"] for o in ops), reverse=True)
        assert sum(o["share"] for o in ops) == pytest.approx(1.0, abs=1e-5)
        status, pool = await get(s, f"{api}/pool", params={"since": "-600"})
        assert status == 200 and pool["samples"] == [] and sum(p["requests"] for p in pool["series"]) == 6
        status, stats = await get(s, f"{api}/stats")
        assert status == 200 and stats["store"]["exchanges"] == 6 and stats["live"]["dropped"] == 0

        # /healthz and /metrics are still there beside the API
        async with s.get(f"http://127.0.0.1:{sc.admin_port}/healthz") as r:
            assert r.status == 200 and (await r.json())["stored"] == 6


async def read_events(resp: aiohttp.ClientResponse, until: float) -> AsyncIterator[tuple[str, Any]]:
    """Parse Server-Sent Events until the deadline (comments yield ("comment", text))."""
    buf = b""
    while time.monotonic() < until:
        try:
            chunk = await asyncio.wait_for(resp.content.readany(), until - time.monotonic())
        except TimeoutError:
            return
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            name, data = "message", []
            for line in block.decode().splitlines():
                if line.startswith(":"):
                    yield "comment", line[1:].strip()
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
            if data:
                yield name, json.loads("\n".join(data))


async def test_stream_delivers_a_new_exchange_within_a_second(sidecar_on_engine):
    sc, _ = sidecar_on_engine
    proxy, api = f"http://127.0.0.1:{sc.port}", f"http://127.0.0.1:{sc.admin_port}/api/v1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{api}/stream", timeout=aiohttp.ClientTimeout(total=30)) as stream:
            assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
            events = read_events(stream, time.monotonic() + 10)
            name, first = await events.__anext__()
            assert name == "stats" and set(first) >= {"in_flight", "high_water", "rps", "error_rate", "dropped",
                                                      "pool"}
            answer = await send(s, proxy, find_many(2))
            sent_at = time.monotonic()
            assert answer["data"]["findManyUser"][1]["id"] == 1
            got = None
            async for name, data in events:
                if name == "exchanges":
                    got = data
                    break
            assert got is not None, "no exchanges event"
            assert time.monotonic() - sent_at < 1.0
            (row,) = got["rows"]
            assert (row["model"], row["action"], row["status"], row["seq"]) == ("User", "findMany", 200, 1)
            assert "skipped" not in got
            # stats follow, once a second, and count what went by
            async for name, data in events:
                if name == "stats":
                    assert data["in_flight"] == 0 and data["dropped"] == 0
                    break
        # a filtered stream only gets matching rows; a bad filter is refused before streaming
        status, err = await get(s, f"{api}/stream", params={"filter": "(model:User"})
        assert status == 400 and err["position"] == 0
        async with s.get(f"{api}/stream", params={"filter": "action:createOne"}) as stream:
            events = read_events(stream, time.monotonic() + 10)
            await events.__anext__()  # the first stats
            await send(s, proxy, find_many(1))
            await send(s, proxy, CREATE)
            async for name, data in events:
                if name == "exchanges":
                    assert [r["action"] for r in data["rows"]] == ["createOne"]
                    break
            else:
                raise AssertionError("no exchanges event")


async def test_replay_read_only_against_the_real_upstream_and_writes_need_confirm(sidecar_on_engine):
    sc, engine = sidecar_on_engine
    proxy, api = f"http://127.0.0.1:{sc.port}", f"http://127.0.0.1:{sc.admin_port}/api/v1"
    async with aiohttp.ClientSession() as s:
        await send(s, proxy, find_many(3), Authorization="Bearer sekret-token-123")
        await send(s, proxy, find_many(4))
        await send(s, proxy, CREATE)
        await await_stored(sc, 3)
        _, page = await get(s, f"{api}/exchanges", params={"order": "asc"})
        with_auth, read, write = (r["id"] for r in page["rows"])
        before = len(engine.received)

        async with s.post(f"{api}/exchanges/{read}/replay", json={"confirm": False}) as r:
            assert r.status == 200
            out = await r.json()
        assert out["status"] == 200 and out["read_only"] is True and out["diff"] == ""
        assert json.loads(out["body"]) == json.loads(out["original"]["body"]) == \
            {"data": {"findManyUser": [{"id": i, "email": f"u{i}@example.test"} for i in range(4)]}}
        assert out["original"]["status"] == 200 and out["duration_ms"] > 0 and out["notes"] == []
        assert engine.received[before:] == [find_many(4)]  # it really reached the upstream, once

        # the redacted Authorization is left out, and said so (this upstream needs none)
        async with s.post(f"{api}/exchanges/{with_auth}/replay") as r:
            out = await r.json()
        assert r.status == 200 and out["diff"] == "" and "Authorization" in out["notes"][0]
        assert "Authorization" not in engine.headers[-1]

        async with s.post(f"{api}/exchanges/{write}/replay", json={"confirm": False}) as r:
            assert r.status == 409
            err = await r.json()
        assert "createOne" in err["error"] and "confirm" in err["error"] and err["read_only"] is False
        assert len(engine.received) == before + 2  # nothing was sent
        async with s.post(f"{api}/exchanges/{write}/replay", json={"confirm": True}) as r:
            out = await r.json()
        assert r.status == 200 and out["read_only"] is False and out["confirmed"] is True
        assert json.loads(out["original"]["body"]) == {"data": {"createOneUser": {"id": 101}}}
        assert json.loads(out["body"]) == {"data": {"createOneUser": {"id": 102}}}
        assert '\n-      "id": 101\n+      "id": 102\n' in out["diff"] and out["diff"].startswith("--- original\n+++ replay\n")

        async with s.post(f"{api}/exchanges/{read}/replay", data=b"not json") as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]


async def test_replay_refuses_what_it_cannot_send_faithfully(engine, tmp_path):
    sc = await start_sidecar(make_settings(engine[0], tmp_path / "c.db", capture_body_limit=150))
    try:
        proxy, api = f"http://127.0.0.1:{sc.port}", f"http://127.0.0.1:{sc.admin_port}/api/v1"
        async with aiohttp.ClientSession() as s:
            big = find_many(2)
            big["query"]["arguments"]["where"] = {"email": {"contains": "x" * 300}}
            await send(s, proxy, big)
            await send(s, proxy, {**find_many(1)}, **{"X-Require-Auth": "1", "Authorization": "Bearer abcdef123"})
            await await_stored(sc, 2)
            _, page = await get(s, f"{api}/exchanges", params={"order": "asc"})
            truncated, needs_auth = (r["id"] for r in page["rows"])
            async with s.post(f"{api}/exchanges/{truncated}/replay") as r:
                assert r.status == 422 and "truncated" in (await r.json())["error"]
            async with s.post(f"{api}/exchanges/{needs_auth}/replay") as r:
                err = await r.json()
            assert r.status == 422 and "401" in err["error"] and "Authorization" in err["error"]
    finally:
        await sc.stop()


async def test_token_guards_the_api_but_not_health_or_metrics(upstream, tmp_path):
    sc = await start_sidecar(make_settings(upstream[0], tmp_path / "c.db", admin_token="s3cret-token"))
    try:
        base = f"http://127.0.0.1:{sc.admin_port}"
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
                async with s.get(f"{base}/api/v1/exchanges", headers=headers) as r:
                    assert r.status == 401 and "Bearer" in (await r.json())["error"]
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(f"{base}/api/v1/nothing") as r:
                assert r.status == 401  # unknown paths say nothing either
            auth = {"Authorization": "Bearer s3cret-token"}
            async with s.get(f"{base}/api/v1/exchanges", headers=auth) as r:
                assert r.status == 200 and (await r.json())["total"] == 0
            async with s.get(f"{base}/api/v1/info", headers=auth) as r:
                assert "s3cret-token" not in await r.text()
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{base}/metrics") as r:
                assert r.status == 200
    finally:
        await sc.stop()
    assert "s3cret-token" not in repr(sc.settings)


async def test_a_non_loopback_admin_listener_needs_a_token(upstream, tmp_path):
    for host in ("0.0.0.0", "[::]", "192.0.2.1", "example.test"):
        settings = make_settings(upstream[0], tmp_path / "c.db", admin_listen=f"{host}:0")
        with pytest.raises(ValueError, match="--admin-token"):
            await start_sidecar(settings)
    for host in ("127.0.0.1", "127.0.0.2", "[::1]", "localhost"):
        Settings(upstream="http://127.0.0.1:1", admin_listen=f"{host}:0").validate()
    Settings(upstream="http://127.0.0.1:1", admin_listen="0.0.0.0:0", admin_token="t").validate()
    done = run_cli("proxy", "--upstream", upstream[0], "--admin-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0",
                   "--db", str(tmp_path / "x.db"))
    assert done.returncode == 2 and "--admin-token" in done.stderr and "Traceback" not in done.stderr


async def test_api_runs_in_the_recorder_process(engine, proxy_process, tmp_path):
    proxy = proxy_process(engine[0], tmp_path / "c.db", env={"PDP_ADMIN_TOKEN": "tok-en"})
    api = f"http://127.0.0.1:{proxy.admin_port}/api/v1"
    auth = {"Authorization": "Bearer tok-en"}
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 15
        while True:  # the recorder process serves the admin listener
            try:
                async with s.get(f"{api}/info", headers=auth) as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with s.get(f"{api}/stream", headers=auth) as stream:
            events = read_events(stream, time.monotonic() + 10)
            assert (await events.__anext__())[0] == "stats"
            await send(s, proxy.url, find_many(2))
            async for name, data in events:
                if name == "exchanges":
                    assert data["rows"][0]["action"] == "findMany"
                    break
            else:
                raise AssertionError("no exchanges event from the recorder process")
        async with s.get(f"{api}/exchanges", headers=auth) as r:
            page = await r.json()
        assert page["total"] == 1
        async with s.post(f"{api}/exchanges/{page['rows'][0]['id']}/replay", headers=auth) as r:
            out = await r.json()
        assert r.status == 200 and out["diff"] == ""
    log = proxy.stop()
    assert "tok-en" not in log
