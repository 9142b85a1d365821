"""Fixtures for the TUI: a seeded capture file, the app on it (UTC, fixed size), settling."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from pdp_observe.tui.app import ObserveApp
from pdp_observe.tui.source import StoreSource
from tests.tui.seed import seed

SIZE = (140, 40)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "captures.db"
    seed(path)
    return path


def make_app(path: Path, *, watch: bool = False, poll_s: float = 0.1) -> ObserveApp:
    source = StoreSource(str(path), poll_s=poll_s, description=path.name)  # no tmp dir in snapshots
    return ObserveApp(source, tz=UTC, watch=watch)


@pytest.fixture
def app(store: Path) -> ObserveApp:
    return make_app(store)


async def settle(pilot: Any, timeout: float = 10.0) -> None:
    """Wait until the list has what it needs on screen and no one-shot worker is running."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        busy = [w for w in app.workers if not w.is_finished and w.group != "events"]  # every node's workers
        if not busy and not app.home.exchanges.busy and app.pool_loads:
            await pilot.pause()
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the app did not settle")


async def wait_for(pilot: Any, condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def screen_text(app: ObserveApp) -> str:
    """Everything the current screen shows, as plain text (for assertions)."""
    return "\n".join(s.text for s in app.screen._compositor.render_strips())
