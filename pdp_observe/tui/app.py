"""The ``pdp-observe tui`` application: wiring between the source, the screens and the workers.

Workers only ask the source and post a message (:mod:`.messages`); the handlers here and
in the screens own every piece of state. The app never imports the proxy: it reads the
management API or a capture file through a :class:`~.source.Source`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from .export import curl_command
from .messages import (
    ExchangeLoaded,
    PoolLoaded,
    ReplayFinished,
    ReplayRefused,
    RequestFailed,
    RowsArrived,
    SourceStateChanged,
    StatsArrived,
    TransactionLoaded,
)
from .screens.detail import DetailScreen
from .screens.help import HelpScreen
from .screens.home import HomeScreen
from .screens.modals import ConfirmModal, ReplayScreen, TextModal
from .screens.operations import OperationsScreen
from .screens.transaction import TransactionScreen
from .source import ReplayNeedsConfirm, Source, SourceError, SourceUnreachable

POOL_EVERY_S = 2.0
POOL_WINDOW_S = 120.0
THEMES = ("textual-dark", "textual-light")


class ObserveApp(App[None]):
    """Live view of a sidecar (or a capture file): list, detail, transactions, operations, pool."""

    CSS_PATH = "app.tcss"
    TITLE = "pdp-observe"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help"),
        Binding("d", "toggle_theme", "Theme", show=False),
        Binding("ctrl+c", "quit", "Quit", show=False),
    ]

    def __init__(self, source: Source, *, tz: tzinfo | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, watch: bool = True) -> None:
        super().__init__()
        self.source = source
        self.tz = tz
        self.clock = clock
        self.watch = watch
        self.home = HomeScreen(source, clock=monotonic, tz=tz)
        self.reachable: bool | None = None
        self.pool_loads = 0
        self.stats_seen = 0
        self._last_error: str | None = None

    # ---- lifecycle ------------------------------------------------------------------
    async def on_mount(self) -> None:
        await self.push_screen(self.home)  # the workers below report to its widgets
        # Full (gen 2) collections walk every object Textual built — 60–90 ms each, measured
        # while fed 2,000 exchanges/s: a dropped frame every few seconds. What exists once the
        # screen is up lives as long as the app, so it is moved out of the collector's sight.
        self.call_after_refresh(gc.freeze)
        if self.watch:
            self.run_worker(self._watch(), group="events", exit_on_error=False)
        self.refresh_pool()
        self.set_interval(POOL_EVERY_S, self.refresh_pool)

    async def on_unmount(self) -> None:
        self.workers.cancel_all()
        await self.source.close()

    async def _watch(self) -> None:
        async for kind, data in self.source.events():
            if kind == "exchanges":
                self.post_message(RowsArrived(list(data.get("rows") or [])))
            elif kind == "stats":
                self.post_message(StatsArrived(data))
            elif kind == "state":
                self.post_message(SourceStateChanged(bool(data.get("ok")), data.get("error")))

    def refresh_pool(self) -> None:
        self.run_worker(self._pool(), group="pool", exclusive=True, exit_on_error=False)

    async def _pool(self) -> None:
        try:
            if self.source.live:
                newest = self.clock()
            else:  # a capture file: the last two minutes it recorded
                rows = (await self.source.page(limit=1)).get("rows") or []
                newest = rows[0]["ts"] if rows else self.clock()
            data = await self.source.pool(since=newest - POOL_WINDOW_S)
        except SourceError:
            return  # the list and the stream report unreachability; the panel just keeps its data
        self.post_message(PoolLoaded(data))

    # ---- what workers report ----------------------------------------------------------
    def on_source_state_changed(self, msg: SourceStateChanged) -> None:
        was = self.reachable
        self.reachable = msg.ok
        if msg.ok:
            self._last_error = None
        self.home.set_unreachable(None if msg.ok else msg.error)
        if msg.ok and was is False:
            self.notify("reconnected", title=self.source.description)
            self.home.exchanges.reload()
        elif not msg.ok and was is not False and self.screen is not self.home:
            self.notify(msg.error or "unreachable", title="sidecar", severity="error")

    def on_rows_arrived(self, msg: RowsArrived) -> None:
        self.home.rows_arrived(msg.rows)

    def on_stats_arrived(self, msg: StatsArrived) -> None:
        self.stats_seen += 1
        self.home.pool_panel.update_stats(msg.stats)

    def on_pool_loaded(self, msg: PoolLoaded) -> None:
        self.pool_loads += 1
        self.home.pool_panel.update_pool(msg.data)

    def on_request_failed(self, msg: RequestFailed) -> None:
        self.source_failed(msg.what, msg.error)

    def source_failed(self, what: str, error: Exception) -> None:
        """Unreachable: the banner says so (once); anything else: a notice, not repeated."""
        if isinstance(error, SourceUnreachable):
            self.reachable = False
            self.home.set_unreachable(str(error))
            if self.screen is self.home:
                return
        if str(error) != self._last_error or what != "list":
            self.notify(str(error), title=what, severity="error")
        self._last_error = str(error)

    def on_exchange_loaded(self, msg: ExchangeLoaded) -> None:
        if msg.purpose == "curl":
            self.show_curl(msg.detail)
        else:
            self.push_screen(DetailScreen(msg.detail, tz=self.tz, width=self.size.width))

    def on_transaction_loaded(self, msg: TransactionLoaded) -> None:
        self.push_screen(TransactionScreen(msg.data, tz=self.tz))

    def on_replay_finished(self, msg: ReplayFinished) -> None:
        self.push_screen(ReplayScreen(msg.result))

    def on_replay_refused(self, msg: ReplayRefused) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._ask(self._replay(msg.ex_id, True), "replay")

        self.push_screen(ConfirmModal(f"{msg.reason}\n\nReplay it anyway? This sends the request to the "
                                      "upstream again and may change data.", yes="Replay"), answered)

    # ---- things the screens ask for ----------------------------------------------------
    def _ask(self, coro: Any, what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except SourceError as exc:
                self.post_message(RequestFailed(what, exc))
            except Exception as exc:  # noqa: BLE001 - an odd answer is reported, never fatal
                self.post_message(RequestFailed(what, SourceError(f"unexpected answer: {exc!r}")))

        self.run_worker(run(), group=what, exit_on_error=False)

    def open_detail(self, ex_id: str) -> None:
        self._ask(self._exchange(ex_id, "detail"), "exchange")

    def copy_curl(self, ex_id: str) -> None:
        self._ask(self._exchange(ex_id, "curl"), "exchange")

    async def _exchange(self, ex_id: str, purpose: str) -> None:
        self.post_message(ExchangeLoaded(await self.source.exchange(ex_id), purpose))

    def open_transaction(self, txn: str) -> None:
        async def load() -> None:
            self.post_message(TransactionLoaded(await self.source.transaction(txn)))

        self._ask(load(), "transaction")

    def show_curl(self, detail: dict[str, Any]) -> None:
        cmd = curl_command(detail)
        self.copy_to_clipboard(cmd)
        self.push_screen(TextModal("copy as curl", cmd, "copied to the clipboard (OSC 52; some terminals "
                                                        "ignore it). Esc closes."))

    def replay(self, ex_id: str) -> None:
        if not self.source.can_replay:
            self.notify("replay needs a running sidecar: start with --connect (a capture file cannot "
                        "send requests upstream)", title="replay", severity="warning")
            return
        self._ask(self._replay(ex_id, False), "replay")

    async def _replay(self, ex_id: str, confirm: bool) -> None:
        try:
            result = await self.source.replay(ex_id, confirm=confirm)
        except ReplayNeedsConfirm as exc:
            self.post_message(ReplayRefused(ex_id, str(exc)))
            return
        self.post_message(ReplayFinished(ex_id, result))

    # ---- actions ------------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[1] if self.theme == THEMES[0] else THEMES[0]

    def action_operations(self) -> None:
        def chosen(flt: str | None) -> None:
            if flt:
                self.home.set_filter(flt)

        self.push_screen(OperationsScreen(self.source, filter=self.home.exchanges.query.filter), chosen)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        home = self.home
        yield SystemCommand("Filter", "Filter the list (the filter language; ? for help)", home.action_filter)
        yield SystemCommand("Clear filter", "Show every exchange", lambda: home.set_filter(""))
        yield SystemCommand("Follow / pause", "Toggle following new exchanges", home.action_toggle_follow)
        for key in ("time", "ms", "engine", "status", "code", "model", "action", "sqls", "size", "txn"):
            yield SystemCommand(f"Sort by {key}", f"Order the list by {key} (again: reverse)",
                                lambda k=key: home.sort_by(k))  # type: ignore[misc]
        yield SystemCommand("Operations", "Stats by fingerprint over a window", self.action_operations)
        yield SystemCommand("Export", "Export the filtered exchanges to HAR or JSON lines", home.action_export)
        yield SystemCommand("Toggle pool panel", "Collapse or expand the pool panel", home.action_toggle_pool)
        yield SystemCommand("Toggle dark/light", "Switch between the dark and the light theme",
                            self.action_toggle_theme)
        yield SystemCommand("Help", "Keys and the filter language", self.action_help)
