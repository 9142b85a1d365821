"""The TUI attached to a live sidecar over the management API, on a real Prisma 7.2 stack.

Prisma Client 7.2 → sidecar (recorder process, admin API) → executor 7.2 → PostgreSQL, with
``pdp-observe tui``'s app (headless) attached to the admin listener while the workload runs:

1. every exchange the workload made shows up in the live list, within 1 s of being answered;
2. when the sidecar goes away the screen says so, and when it is back on the same address the
   app reconnects by itself and new exchanges appear again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timezone
from pathlib import Path

import pytest

from pdp_observe.query import Query
from pdp_observe.sidecar import start_sidecar
from pdp_observe.tui.app import ObserveApp
from pdp_observe.tui.source import ApiSource
from tests.conftest import make_settings
from tests.stacks import harness

pytestmark = pytest.mark.e2e
SIZE = (140, 40)


async def _until(pilot, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _screen(app: ObserveApp) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


async def test_tui_follows_a_live_sidecar_and_reconnects(postgres: harness.Postgres, tmp_path: Path) -> None:
    server_kind, client_kind = harness.STACKS["qpe72"]
    db_url = postgres.create_database("tui_live")
    db = tmp_path / "captures.db"
    with harness.start_server(server_kind, db_url) as server:
        sc = await start_sidecar(make_settings(server.base_url, db, recorder="process"))
        admin_port = sc.admin_port
        assert admin_port
        app = ObserveApp(ApiSource(f"http://127.0.0.1:{admin_port}"), tz=timezone.utc, watch=True)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await _until(pilot, lambda: app.reachable is True, 15, "the stream to attach")
                lst = app.home.exchanges
                seen: dict[str, float] = {}

                def look() -> None:
                    now = time.time()
                    for row in lst.loaded_rows():
                        seen.setdefault(row["id"], now)

                work = asyncio.ensure_future(asyncio.to_thread(
                    harness.run_workload, client_kind, harness.client_url(client_kind, sc.port)))
                while not work.done():
                    look()
                    await pilot.pause(0.05)
                steps = work.result()
                assert steps, "the workload ran no step"
                q = Query(str(db))
                try:
                    stored = q.page(limit=1000)["rows"]
                finally:
                    q.close()
                assert len(stored) >= 10
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not all(r["id"] in seen for r in stored):
                    look()
                    await pilot.pause(0.05)
                missing = [r["id"] for r in stored if r["id"] not in seen]
                assert not missing, f"{len(missing)} recorded exchanges never appeared in the TUI"
                lags = sorted(seen[r["id"]] - (r["ts"] + (r["duration_ms"] or 0) / 1000) for r in stored)
                print(f"\n{len(lags)} exchanges; shown after being answered: median {lags[len(lags) // 2]:.3f} s, "
                      f"max {lags[-1]:.3f} s")
                assert lags[-1] < 1.0, f"slowest exchange reached the screen {lags[-1]:.2f} s after its answer"
                assert "FOLLOW" in _screen(app)

                # 2. the sidecar goes away: the screen says so; it comes back: the app reconnects
                await sc.stop()
                await _until(pilot, lambda: app.reachable is False, 15, "the unreachable state")
                assert "reconnecting" in _screen(app)
                before = lst.total
                sc = await start_sidecar(make_settings(server.base_url, db, recorder="process",
                                                       admin_listen=f"127.0.0.1:{admin_port}"))
                await _until(pilot, lambda: app.reachable is True, 30, "the automatic reconnect")
                assert "reconnecting" not in _screen(app)
                await asyncio.to_thread(harness.run_workload, client_kind, harness.client_url(client_kind, sc.port))
                await _until(pilot, lambda: (lst.total or 0) > (before or 0), 10, "new exchanges after reconnecting")
        finally:
            await sc.stop()
