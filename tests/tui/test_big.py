"""The list stays virtual: a million stored exchanges, a page on screen after jumping to the end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.tui.conftest import SIZE, make_app, screen_text, settle, wait_for
from tests.tui.seed import seed_big

N = 1_000_000


@pytest.mark.slow
async def test_million_rows_jump_to_end(tmp_path: Path):
    path = tmp_path / "big.db"
    built = seed_big(path, N)
    print(f"\nseeded {N:,} rows in {built:.1f}s")
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        t0 = time.perf_counter()
        await settle(pilot, timeout=30)
        lst = app.home.exchanges
        first_page = time.perf_counter() - t0
        assert lst.total == N
        t0 = time.perf_counter()
        await pilot.press("end")
        await wait_for(pilot, lambda: not lst.busy and lst.selected is not None, timeout=10, what="the last page")
        jump = time.perf_counter() - t0
        assert lst.selected["id"] == f"{0:032x}"  # the oldest
        assert "12:00:00.000" in screen_text(app)  # the first recorded row is on screen
        t0 = time.perf_counter()
        lst.move_cursor(N // 2)
        await wait_for(pilot, lambda: not lst.busy and lst.selected is not None, timeout=10, what="the middle")
        middle = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(20):
            await pilot.press("pagedown")
        await wait_for(pilot, lambda: not lst.busy and lst.selected is not None, timeout=10, what="paging")
        paging = time.perf_counter() - t0
        print(f"first page {first_page * 1000:.0f} ms, jump to end {jump * 1000:.0f} ms, "
              f"middle {middle * 1000:.0f} ms, 20 page-downs {paging * 1000:.0f} ms; "
              f"rows held {len(lst.loaded_rows())}")
        assert jump < 2.0 and middle < 2.0
        assert len(lst.loaded_rows()) <= 24 * 100  # never all rows
