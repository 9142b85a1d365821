"""The home screen: the virtualised list, sorting, filtering, follow and pause, navigation."""

from __future__ import annotations

from pathlib import Path

from pdp_observe.tui.widgets.exchange_list import ExchangeList
from pdp_observe.tui.widgets.filter_bar import FilterBar
from tests.tui.conftest import SIZE, make_app, screen_text, settle, wait_for
from tests.tui.seed import append, ex_id


async def test_newest_first_with_decoded_columns(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        assert lst.total == 60
        assert lst.selected["id"] == ex_id(59)  # newest first, cursor on it
        text = screen_text(app)
        assert "TIME" in text and "OPERATION" in text and "ENGINE" in text
        assert "12:00:59.000" in text  # UTC, injected
        assert "60 exchanges" in text and "FOLLOW" in text
        # the pool panel shows the scraped engine pool
        assert "engine pool" in text and "busy" in text and "waiting" in text


async def test_navigation_keys_and_click(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        await pilot.press("down", "down", "j")
        assert lst.cursor == 3 and lst.selected["id"] == ex_id(56)
        await pilot.press("k")
        assert lst.cursor == 2
        await pilot.press("end")
        await settle(pilot)
        assert lst.cursor == 59 and lst.selected["id"] == ex_id(0)
        await pilot.press("home")
        assert lst.cursor == 0
        await pilot.press("pagedown")
        assert lst.cursor > 10
        await pilot.click(ExchangeList, offset=(5, 3))  # header is line 0: line 3 is the third row
        await settle(pilot)
        assert lst.cursor == int(lst.scroll_offset.y) + 2


async def test_sort_by_duration_key_and_header_click(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        await pilot.press("4")  # the MS column
        await settle(pilot)
        assert (lst.query.sort, lst.query.desc) == ("ms", True)
        durations = [lst.row_at(i)["duration_ms"] for i in range(10)]
        assert durations == sorted(durations, reverse=True)
        assert lst.row_at(0)["id"] == ex_id(13)  # the 5 s P2024
        assert "MS ▼" in screen_text(app)
        await pilot.press("4")  # again: ascending
        await settle(pilot)
        assert lst.query.desc is False
        assert lst.row_at(0)["duration_ms"] <= lst.row_at(1)["duration_ms"]
        # clicking the STATUS header sorts by status
        x = screen_text(app).splitlines()[1].index("STATUS")
        await pilot.click(ExchangeList, offset=(x + 1, 0))
        await settle(pilot)
        assert lst.query.sort == "status"
        await pilot.press("S")
        await settle(pilot)
        assert lst.query.sort == "status" and lst.query.desc is False
        await pilot.press("s")  # next sort key
        await settle(pilot)
        assert lst.query.sort == "code"


async def test_percentile_colouring_thresholds(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: app.home.exchanges.thresholds != (None, None), what="thresholds")
        p90, p99 = app.home.exchanges.thresholds
        assert p99 == 5000.0 and p90 < p99


async def test_filter_applies_and_errors_inline(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        await pilot.press("slash")
        bar = app.home.query_one(FilterBar)
        assert bar.display
        for ch in "model:Pst":
            await pilot.press(ch)
        await pilot.press("enter")
        await settle(pilot)
        assert lst.total == 0 and "no exchanges match" in screen_text(app)
        assert lst.has_focus  # Enter hands the keys back to the list
        await pilot.press("slash")  # the bar keeps the text for editing
        await pilot.press("backspace", "backspace")
        for ch in 'ost ms:>abc':
            await pilot.press(ch)
        await pilot.press("enter")
        await pilot.pause()
        # the error is shown where it is, the list keeps the last valid filter
        assert bar.error is not None and bar.error.position == len("model:Post ms:>")
        text = screen_text(app)
        assert "^ ms: 'abc' is not a number" in text
        assert lst.query.filter == "model:Pst"
        for _ in range(3):
            await pilot.press("backspace")
        await pilot.press("2", "5", "0", "enter")
        await settle(pilot)
        assert bar.error is None and lst.query.filter == "model:Post ms:>250"
        assert lst.total and all(r["model"] == "Post" and r["duration_ms"] > 250 for r in lst.loaded_rows())
        assert "filter: model:Post ms:>250" in screen_text(app)
        await pilot.press("slash", "escape")  # Esc clears
        await settle(pilot)
        assert lst.query.filter == "" and lst.total == 60 and not bar.display


async def test_follow_shows_new_rows_at_top_and_pause_holds_them(store: Path):
    app = make_app(store, watch=True, poll_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.home.exchanges
        await wait_for(pilot, lambda: app.reachable is True, what="the store source")
        await pilot.press("down", "down")  # select the third newest
        selected = lst.selected["id"]
        append(store, 60, 3)
        await wait_for(pilot, lambda: lst.total == 63 and not lst.busy, what="new rows in follow mode")
        assert lst.row_at(0)["id"] == ex_id(62)  # new rows at the top
        assert lst.selected["id"] == selected  # the selection stayed on its exchange
        await pilot.press("p")
        assert not app.home.follow and "PAUSED" in screen_text(app)
        append(store, 63, 2)
        await wait_for(pilot, lambda: app.home.unseen == 2, what="rows counted while paused")
        assert lst.total == 63 and lst.row_at(0)["id"] == ex_id(62)  # not shown while paused
        assert "+2 new" in screen_text(app)
        await pilot.press("space")  # follow again
        await wait_for(pilot, lambda: lst.total == 65 and not lst.busy, what="rows after resuming")
        assert lst.row_at(0)["id"] == ex_id(64)


async def test_pool_panel_collapses(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        panel = app.home.pool_panel
        height = panel.size.height
        await pilot.press("b")
        await pilot.pause()
        assert panel.has_class("collapsed") and panel.size.height < height
        await pilot.press("b")
        await pilot.pause()
        assert panel.size.height == height


async def test_help_and_theme_toggle(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.home
        theme = app.theme
        await pilot.press("d")
        assert app.theme != theme
        await pilot.press("d")
        assert app.theme == theme


async def test_command_palette_has_our_commands(app):
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Filter", "Operations", "Export", "Sort by ms", "Toggle dark/light"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        for ch in "Sort by ms":
            await pilot.press(ch)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.home.exchanges.query.sort == "ms"


async def test_unreadable_store_is_reported_not_raised(tmp_path: Path):
    app = make_app(tmp_path / "missing.db")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.home.exchanges.error is not None, what="an error notice")
        assert "no capture file" in app.home.exchanges.error
        assert "cannot load: no capture file" in screen_text(app)
        assert app.is_running
