"""The home screen: status line, filter bar, the live list and the pool panel."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from ...filterlang import FilterError, compile_filter
from ..columns import COLUMNS, SORT_KEYS
from ..messages import ThresholdsLoaded
from ..source import Source, SourceError
from ..widgets.exchange_list import ExchangeList, ListQuery
from ..widgets.filter_bar import FilterBar
from ..widgets.pool_panel import PoolPanel

REFRESH_MIN_S = 0.5
"""Follow mode re-reads the visible page at most this often, however fast rows arrive."""
THRESHOLDS_EVERY_S = 10.0
"""Follow mode recomputes the p90/p99 colour thresholds at most this often."""
THRESHOLD_MIN_ROWS = 20


class HomeScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("p,space", "toggle_follow", "Follow/pause"),
        Binding("s", "next_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("t", "transaction", "Txn"),
        Binding("o", "app.operations", "Operations"),
        Binding("c", "copy_curl", "Curl"),
        Binding("e", "export", "Export"),
        Binding("r", "replay", "Replay"),
        Binding("b", "toggle_pool", "Pool", show=False),
        Binding("q", "app.quit", "Quit"),
        *[Binding(str(i + 1), f"sort_column({i})", show=False) for i, c in enumerate(COLUMNS) if c.sort],
    ]

    def __init__(self, source: Source, *, clock: Any = time.monotonic, tz: Any = None) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self.tz = tz
        self.follow = True
        self.unseen = 0  # rows that arrived while paused and match the filter
        self.unreachable: str | None = None
        self._last_reload = 0.0
        self._reload_timer: Any = None
        self._thresholds_at = 0.0
        self._query_serial = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="status-line")
        yield Static("", id="banner")
        yield FilterBar(id="filter-bar")
        yield ExchangeList(self.source, tz=self.tz, id="exchanges")
        yield PoolPanel(id="pool-panel")
        yield Footer()

    @property
    def exchanges(self) -> ExchangeList:
        return self.query_one(ExchangeList)

    @property
    def pool_panel(self) -> PoolPanel:
        return self.query_one(PoolPanel)

    def on_mount(self) -> None:
        self.query_one(FilterBar).display = False
        self.query_one("#banner").display = False
        self.exchanges.focus()
        self.set_query(ListQuery())

    # ---- what the list shows --------------------------------------------------------
    def set_query(self, query: ListQuery) -> None:
        self.unseen = 0
        self.exchanges.set_query(query)
        self._query_serial += 1
        self.exchanges.thresholds = (None, None)
        self._load_thresholds()
        self.update_status()

    def _load_thresholds(self) -> None:
        self._thresholds_at = self.clock()
        self.run_worker(self._thresholds(self._query_serial, self.exchanges.query.filter),
                        group="thresholds", exclusive=True, exit_on_error=False)

    def set_filter(self, text: str) -> None:
        self.query_one(FilterBar).set_text(text)
        q = self.exchanges.query
        self.set_query(ListQuery(text, q.sort, q.desc))

    async def _thresholds(self, serial: int, filter: str) -> None:
        """p90 and p99 of duration under the filter: the rows at 10 % and 1 % from the slowest."""
        try:
            first = await self.source.page(filter=filter, sort="ms", desc=True, limit=1)
            total = int(first.get("total") or 0)
            if total < THRESHOLD_MIN_ROWS:
                return
            values = []
            for share in (0.10, 0.01):
                page = await self.source.page(filter=filter, sort="ms", desc=True, offset=int(total * share), limit=1)
                rows = page.get("rows") or []
                values.append(rows[0].get("duration_ms") if rows else None)
        except SourceError:
            return
        self.post_message(ThresholdsLoaded(serial, values[0], values[1]))

    def on_thresholds_loaded(self, msg: ThresholdsLoaded) -> None:
        if msg.generation == self._query_serial:  # not for a filter or order since replaced
            self.exchanges.thresholds = (msg.p90, msg.p99)
            self.exchanges.refresh()

    # ---- live rows ------------------------------------------------------------------
    def rows_arrived(self, rows: list[dict[str, Any]]) -> None:
        if self.follow:
            self._reload_soon()
            return
        try:
            flt = compile_filter(self.exchanges.query.filter)
        except FilterError:
            return
        self.unseen += sum(1 for r in rows if flt.matches(r))
        self.update_status()

    def _reload_soon(self) -> None:
        wait = self._last_reload + REFRESH_MIN_S - self.clock()
        if wait <= 0:
            self._reload()
        elif self._reload_timer is None:
            self._reload_timer = self.set_timer(wait, self._reload)

    def _reload(self) -> None:
        self._reload_timer = None
        self._last_reload = self.clock()
        self.exchanges.reload()
        if self._last_reload - self._thresholds_at >= THRESHOLDS_EVERY_S:
            self._load_thresholds()

    def set_unreachable(self, error: str | None) -> None:
        self.unreachable = error
        banner = self.query_one("#banner", Static)
        banner.display = error is not None
        if error:
            banner.update(Text(f"⚠ {error} — reconnecting automatically", "bold"))
        self.update_status()

    def update_status(self) -> None:
        q = self.exchanges.query
        total = self.exchanges.total
        mode = Text(" FOLLOW ", "bold black on green") if self.follow else Text(" PAUSED ", "bold black on yellow")
        text = Text.assemble(
            mode, " ", (self.source.description, "bold"), "  ",
            (f"{total:,} exchanges" if total is not None else "loading…"),
            f"  sort {q.sort} {'▼' if q.desc else '▲'}",
            ("  filter: " + q.filter) if q.filter else "",
        )
        if not self.follow and self.unseen:
            text.append(f"  +{self.unseen} new (p to follow)", "bold yellow")
        self.query_one("#status-line", Static).update(text)

    # ---- events from the widgets ----------------------------------------------------
    def on_exchange_list_total_changed(self, _: ExchangeList.TotalChanged) -> None:
        self.update_status()

    def on_exchange_list_selected(self, msg: ExchangeList.Selected) -> None:
        self.app.open_detail(msg.row["id"])  # type: ignore[attr-defined]

    def on_exchange_list_sort_clicked(self, msg: ExchangeList.SortClicked) -> None:
        self.sort_by(msg.sort)

    def on_exchange_list_page_failed(self, msg: ExchangeList.PageFailed) -> None:
        self.app.source_failed("list", msg.error)  # type: ignore[attr-defined]

    @on(FilterBar.Applied)
    def _filter_applied(self, msg: FilterBar.Applied) -> None:
        q = self.exchanges.query
        self.query_one(FilterBar).display = bool(msg.text)
        self.set_query(ListQuery(msg.text, q.sort, q.desc))
        self.exchanges.focus()

    # ---- actions ----------------------------------------------------------------------
    def sort_by(self, sort: str) -> None:
        q = self.exchanges.query
        desc = (not q.desc) if sort == q.sort else True
        self.set_query(ListQuery(q.filter, sort, desc))

    def action_sort_column(self, index: int) -> None:
        if (sort := COLUMNS[index].sort) is not None:
            self.sort_by(sort)

    def action_next_sort(self) -> None:
        q = self.exchanges.query
        nxt = SORT_KEYS[(SORT_KEYS.index(q.sort) + 1) % len(SORT_KEYS)] if q.sort in SORT_KEYS else "time"
        self.set_query(ListQuery(q.filter, nxt, True))

    def action_reverse_sort(self) -> None:
        q = self.exchanges.query
        self.set_query(ListQuery(q.filter, q.sort, not q.desc))

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.unseen = 0
            self._reload()
        self.update_status()

    def action_toggle_pool(self) -> None:
        self.pool_panel.toggle_class("collapsed")

    def _selected_id(self) -> str | None:
        row = self.exchanges.selected
        if row is None:
            self.notify("no exchange selected", severity="warning")
            return None
        return str(row["id"])

    def action_transaction(self) -> None:
        row = self.exchanges.selected
        if row is None or not row.get("txn"):
            self.notify("the selected exchange is not part of an interactive transaction", severity="warning")
            return
        self.app.open_transaction(row["txn"])  # type: ignore[attr-defined]

    def action_copy_curl(self) -> None:
        if (ex_id := self._selected_id()) is not None:
            self.app.copy_curl(ex_id)  # type: ignore[attr-defined]

    def action_replay(self) -> None:
        if (ex_id := self._selected_id()) is not None:
            self.app.replay(ex_id)  # type: ignore[attr-defined]

    def action_export(self) -> None:
        from .modals import ExportModal  # noqa: PLC0415

        self.app.push_screen(ExportModal(self.source, self.exchanges.query.filter, self.exchanges.total))
