"""The TUI attached to a real sidecar's management API: pages, stream, replay, auth, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pdp_observe.sidecar import start_sidecar
from pdp_observe.tui.app import ObserveApp
from pdp_observe.tui.screens.modals import ConfirmModal, ReplayScreen
from pdp_observe.tui.source import (
    ApiSource,
    ReplayNeedsConfirm,
    SourceError,
    SourceUnreachable,
    parse_sse,
)
from tests.conftest import await_stored, free_port, make_settings
from tests.tui.conftest import SIZE, screen_text, settle, wait_for


class Engine:
    """A JSON-protocol query engine: reads answer the same every time, creates count up."""

    def __init__(self) -> None:
        self.next_id = 100

    async def handle(self, req: web.Request) -> web.Response:
        body = await req.json()
        model, action = body.get("modelName"), body.get("action")
        if action == "createOne":
            self.next_id += 1
            data: Any = {"id": self.next_id}
        else:
            data = [{"id": 1, "email": "a@example.test"}]
        return web.json_response({"data": {f"{action}{model}": data}})


@pytest.fixture
async def engine_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", Engine().handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def op(action: str) -> dict[str, Any]:
    args: dict[str, Any] = {"data": {"email": "n@example.test"}} if action == "createOne" else {"take": 1}
    return {"modelName": "User", "action": action, "query": {"arguments": args, "selection": {"$scalars": True}}}


async def send(url: str, *actions: str) -> None:
    async with aiohttp.ClientSession() as s:
        for action in actions:
            async with s.post(url + "/", json=op(action)) as r:
                assert r.status == 200
                await r.read()


@pytest.fixture
async def sidecar(engine_url, tmp_path):
    sc = await start_sidecar(make_settings(engine_url, tmp_path / "c.db", admin_token="tui-token"))
    yield sc
    await sc.stop()


async def test_api_source_answers_like_the_store(sidecar):
    await send(f"http://127.0.0.1:{sidecar.port}", "findMany", "createOne")
    await await_stored(sidecar, 2)
    src = ApiSource(f"http://127.0.0.1:{sidecar.admin_port}", "tui-token")
    try:
        page = await src.page(limit=10)
        assert page["total"] == 2 and [r["action"] for r in page["rows"]] == ["createOne", "findMany"]
        detail = await src.exchange(page["rows"][0]["id"])
        assert detail["operation"]["action"] == "createOne" and "text" in detail["request"]["body"]
        ops = await src.operations(window_s=300)
        assert {o["action"] for o in ops} == {"createOne", "findMany"}
        assert "series" in await src.pool(since=0)
        with pytest.raises(SourceError) as err:
            await src.page(filter="ms:>>1")
        assert err.value.status == 400 and isinstance(err.value.position, int)
        with pytest.raises(ReplayNeedsConfirm):
            await src.replay(page["rows"][0]["id"])
        assert (await src.replay(page["rows"][1]["id"]))["read_only"] is True
    finally:
        await src.close()


async def test_wrong_token_is_a_clear_error(sidecar):
    src = ApiSource(f"http://127.0.0.1:{sidecar.admin_port}", "wrong")
    try:
        with pytest.raises(SourceError, match="refused the token"):
            await src.page()
    finally:
        await src.close()


async def test_unreachable_is_named_and_the_stream_retries():
    port = free_port()
    src = ApiSource(f"http://127.0.0.1:{port}", max_backoff=0.1)
    try:
        with pytest.raises(SourceUnreachable, match=f"sidecar unreachable at http://127.0.0.1:{port}"):
            await src.page()
        states = []
        async for kind, data in src.events():
            states.append((kind, data))
            if len(states) == 3:
                break
        assert all(k == "state" and not d["ok"] and "unreachable" in d["error"] for k, d in states)
    finally:
        await src.close()


async def test_sse_parser():
    async def lines() -> AsyncIterator[bytes]:
        for line in [b"retry: 2000\n", b"\n", b"event: stats\n", b'data: {"rps": 1}\n', b"\n", b": ping\n",
                     b"\n", b"event: exchanges\n", b'data: {"rows":\n', b'data: []}\n', b"\n"]:
            yield line

    assert [e async for e in parse_sse(lines())] == [("stats", {"rps": 1}), ("exchanges", {"rows": []})]


async def test_tui_follows_a_live_sidecar_and_replays_with_confirmation(sidecar):
    proxy = f"http://127.0.0.1:{sidecar.port}"
    await send(proxy, "findMany")
    await await_stored(sidecar, 1)
    app = ObserveApp(ApiSource(f"http://127.0.0.1:{sidecar.admin_port}", "tui-token"), tz=UTC)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        assert lst.total == 1
        await wait_for(pilot, lambda: app.stats_seen > 0, what="a stats event")
        await send(proxy, "createOne")
        await wait_for(pilot, lambda: lst.total == 2 and not lst.busy, what="the streamed row")
        assert lst.row_at(0)["action"] == "createOne"
        lst.move_cursor(0)
        await pilot.press("r")  # a write: the sidecar refuses without confirmation
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        assert "createOne may change data" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen), what="the replay result")
        text = screen_text(app)
        assert "the answer changed" in text and '"id": 101' in text and '"id": 102' in text
        await pilot.press("escape")
        lst.move_cursor(1)
        await pilot.press("r")  # a read replays straight away
        await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen), what="a read-only replay")
        assert "same answer" in screen_text(app)


async def test_banner_while_unreachable_then_reconnects(engine_url, tmp_path):
    port = free_port()
    app = ObserveApp(ApiSource(f"http://127.0.0.1:{port}", "tui-token", max_backoff=0.2), tz=UTC)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.home.unreachable is not None, what="the banner")
        assert f"sidecar unreachable at http://127.0.0.1:{port}" in screen_text(app)
        assert "reconnecting automatically" in screen_text(app)
        sc = await start_sidecar(make_settings(engine_url, tmp_path / "c.db", admin_token="tui-token",
                                               admin_listen=f"127.0.0.1:{port}"))
        try:
            await send(f"http://127.0.0.1:{sc.port}", "findMany")
            await await_stored(sc, 1)
            await wait_for(pilot, lambda: app.home.unreachable is None, what="the reconnect")
            await wait_for(pilot, lambda: app.home.exchanges.total == 1, what="rows after reconnecting")
            assert "unreachable" not in screen_text(app)
        finally:
            await sc.stop()
        await asyncio.sleep(0)


async def test_stream_survives_events_longer_than_aiohttp_line_limit():
    """A burst of 500 rows is one `data:` line of up to a few MiB: the live view must get it, and the next one.

    (aiohttp's line iterator raises on lines past its buffer limit; the stream died there and the list froze at
    2,000 exchanges/s.)
    """
    rows = [{"id": f"{i:032x}", "path": "/query", "sql": ["SELECT " + "x" * 4000]} for i in range(500)]
    big = __import__("json").dumps({"rows": rows})
    assert len(big) > 2_000_000

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for payload in (big, '{"rows": [{"id": "after"}]}'):
            data = f"event: exchanges\ndata: {payload}\n\n".encode()
            await resp.write(data)
        await asyncio.sleep(3)
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/stream", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    src = ApiSource(f"http://127.0.0.1:{runner.addresses[0][1]}", max_backoff=0.1)
    got: list[Any] = []
    try:
        async def read() -> None:
            async for kind, data in src.events():
                got.append((kind, data))
                if kind == "exchanges" and data["rows"][0]["id"] == "after":
                    return

        await asyncio.wait_for(read(), 10)
    finally:
        await src.close()
        await runner.cleanup()
    events = [d for k, d in got if k == "exchanges"]
    assert [len(e["rows"]) for e in events] == [500, 1]
    assert events[0]["rows"][499]["id"] == f"{499:032x}"
    assert not any(k == "state" and not d["ok"] for k, d in got)
