"""SVG snapshots of every screen on the seeded capture (UTC, 140x40).

Regenerate with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the
report before committing: a snapshot is a picture of what a person sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from pdp_observe.tui.screens.detail import DetailScreen
from pdp_observe.tui.screens.modals import ExportModal, TextModal
from pdp_observe.tui.screens.operations import OperationsScreen
from pdp_observe.tui.screens.transaction import TransactionScreen
from tests.tui.conftest import SIZE, make_app, settle, wait_for
from tests.tui.seed import ex_id


def _goto(i: int) -> Callable[[Any], Awaitable[None]]:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        pilot.app.home.exchanges.move_cursor(59 - i)
        await settle(pilot)
    return run


def _then(*steps: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def run(pilot: Any) -> None:
        for step in steps:
            await step(pilot)
    return run


def _keys(*keys: str, until: Callable[[Any], bool] | None = None) -> Callable[[Any], Awaitable[None]]:
    async def run(pilot: Any) -> None:
        await pilot.press(*keys)
        if until is not None:
            await wait_for(pilot, lambda: until(pilot.app), what=f"after {keys}")
        await settle(pilot)
    return run


def _detail(tab: str) -> Callable[[Any], Awaitable[None]]:
    return _then(_goto(13), _keys("enter", until=lambda a: isinstance(a.screen, DetailScreen)), _keys(tab))


CASES: dict[str, Callable[[Any], Awaitable[None]]] = {
    "home": _goto(59),
    "sorted_by_ms": _keys("4"),
    "filter_error": _keys("slash", *"model:User ms:>abc"),
    "filter_applied": _keys("slash", *"is:error", "enter"),
    "paused_pool_collapsed": _keys("p", "b"),
    "detail_overview": _detail("1"),
    "detail_request": _detail("2"),
    "detail_response": _detail("3"),
    "detail_headers": _detail("4"),
    "detail_trace": _detail("5"),
    "detail_raw": _detail("6"),
    "transaction": _then(_goto(31), _keys("t", until=lambda a: isinstance(a.screen, TransactionScreen))),
    "operations": _keys("o", until=lambda a: isinstance(a.screen, OperationsScreen) and bool(a.screen.ops)),
    "curl": _keys("c", until=lambda a: isinstance(a.screen, TextModal)),
    "export": _keys("e", until=lambda a: isinstance(a.screen, ExportModal)),
    "help": _keys("question_mark"),
    "light_theme": _keys("d"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot(case: str, store: Path, snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await CASES[case](pilot)
        for box in pilot.app.screen.query(Input):  # a blinking cursor would make the picture flaky
            box.cursor_blink = False
        await pilot.pause()

    assert snap_compare(make_app(store), terminal_size=SIZE, run_before=run_before)


def test_seeded_ids_are_stable() -> None:
    assert ex_id(13) == "0193a000000d00000000000000000000"
