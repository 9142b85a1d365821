"""Detail tabs, the transaction view, the operations view, curl, export, replay offline."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import DataTable, Input, TabbedContent, Tree

from pdp_observe.tui.screens.detail import DetailScreen
from pdp_observe.tui.screens.modals import ExportModal, TextModal
from pdp_observe.tui.screens.operations import OperationsScreen
from pdp_observe.tui.screens.transaction import TransactionScreen
from tests.tui.conftest import SIZE, screen_text, settle, wait_for
from tests.tui.seed import TXN, ex_id


async def _select(pilot, app, ex: str) -> None:
    """Put the cursor on exchange ``ex`` (seeded ids are newest-first at index 59 - i)."""
    i = int(ex[:12], 16) - 0x0193A0000000
    app.home.exchanges.move_cursor(59 - i)
    await settle(pilot)
    assert app.home.exchanges.selected["id"] == ex


async def test_detail_tabs(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await _select(pilot, app, ex_id(13))  # the P2024 with a pressure snapshot
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), what="the detail screen")
        screen = app.screen
        text = screen_text(app)
        assert ex_id(13) in text and "P2024" in text
        assert "where the time went" in text and "engine" in text and "SQL" in text
        assert "PRESSURE" in text and "P2024" in text  # the pressure snapshot, who held the pool
        await pilot.press("2")
        assert screen.query_one(TabbedContent).active == "request"
        text = screen_text(app)
        assert 'UPDATE "public"."Post"' in text and "params" in text
        assert "prisma      Post.updateOne" in text
        await pilot.press("3")
        tree = screen.query_one(Tree)
        assert tree.root.children and "errors" in str(tree.root.children[0].label)
        await pilot.press("4")
        text = screen_text(app)
        assert "Authorization" in text and "[REDACTED:3fa1c2]" in text
        await pilot.press("5")
        text = screen_text(app)
        assert "sidecar (hop)" in text and "prisma:engine:query" in text and "sql[1]" in text
        await pilot.press("6")
        text = screen_text(app)
        assert "request body:" in text and "response body:" in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.home


async def test_failed_exchange_detail_has_no_response(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await _select(pilot, app, ex_id(21))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), what="the detail screen")
        assert "FAILURE" in screen_text(app) and "upstream_refused" in screen_text(app)
        await pilot.press("3")
        assert "no response: upstream_refused" in screen_text(app)


async def test_transaction_view_from_list_and_detail(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await _select(pilot, app, ex_id(31))
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, TransactionScreen), what="the transaction")
        text = screen_text(app)
        assert TXN in text and "COMMITTED" in text and "isolation ReadCommitted" in text
        table = app.screen.query_one(DataTable)
        assert table.row_count == 4
        ops = [table.get_row_at(i)[4] for i in range(4)]
        assert ops[0] == "tx_start" and ops[-1] == "tx_commit"
        assert table.get_row_at(1)[3].plain != "-"  # the gap before the second member
        await pilot.press("down", "enter")  # a member opens its detail...
        await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), what="a member's detail")
        assert app.screen.detail["id"] == ex_id(31)
        await pilot.press("t")  # ...and t from the detail opens the transaction again
        await wait_for(pilot, lambda: len(app.screen_stack) == 5, what="the transaction from a detail")
        assert isinstance(app.screen, TransactionScreen)


async def test_transaction_key_on_a_row_outside_one_warns(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await pilot.pause()
        assert app.screen is app.home


async def test_operations_then_enter_filters_the_list(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, OperationsScreen) and app.screen.ops,
                       what="operations")
        screen = app.screen
        assert screen.window == 3  # offline: the whole capture
        first = screen.ops[0]
        assert first["total_ms"] >= screen.ops[-1]["total_ms"]
        assert "operations over:" in screen_text(app) and "p99" in screen_text(app)
        await pilot.press("1")  # the last minute of the capture
        await wait_for(pilot, lambda: not screen.loading, what="the 1m window")
        assert screen.window == 0
        await pilot.press("4")
        await wait_for(pilot, lambda: not screen.loading, what="all")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is app.home
        lst = app.home.exchanges
        assert lst.query.filter == f"fp:{first['fingerprint']}"
        assert lst.total == first["count"]
        assert all(r["fingerprint"] == first["fingerprint"] for r in lst.loaded_rows())


async def test_curl_copy_marks_redacted_secrets(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, TextModal), what="the curl modal")
        cmd = app.screen.text
        assert cmd.startswith("# secrets were redacted")
        assert "-H 'Authorization: <redacted:3fa1c2>'" in cmd
        assert "curl -X POST 'http://127.0.0.1:4467/'" in cmd and "--data-raw" in cmd
        assert app.clipboard == cmd
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.home


async def test_export_har_and_jsonl(app, tmp_path: Path):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        for ch in "model:User":
            await pilot.press(ch)
        await pilot.press("enter")
        await settle(pilot)
        expected = app.home.exchanges.total
        for name in ("out.har", "out.jsonl"):
            await pilot.press("e")
            await wait_for(pilot, lambda: isinstance(app.screen, ExportModal), what="the export prompt")
            app.screen.query_one(Input).value = str(tmp_path / name)
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is app.home, what="the export")
        har = json.loads((tmp_path / "out.har").read_text())
        log = har["log"]
        assert log["version"] == "1.2" and log["creator"]["name"] == "pdp-observe"
        assert len(log["entries"]) == expected
        for e in log["entries"]:
            assert {"startedDateTime", "time", "request", "response", "cache", "timings"} <= set(e)
            assert e["request"]["url"].startswith("http://127.0.0.1:4467/")
            assert e["_pdp"]["model"] == "User"
            assert all(e["timings"][k] >= 0 for k in ("send", "wait", "receive"))
        starts = [e["startedDateTime"] for e in log["entries"]]
        assert starts == sorted(starts)  # oldest first
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert len(lines) == expected
        assert {json.loads(line)["operation"]["model"] for line in lines} == {"User"}
        assert not list(tmp_path.glob("*.part"))


async def test_replay_offline_explains(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert app.screen is app.home
        assert any("replay needs a running sidecar" in n.message for n in app._notifications)
